"""The callback policy: which URLs a hub's `callbackUrls` admit, and the network backend that connects
only to checked addresses (refusals happen before any packet: the inner backend is never asked)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable

import httpcore
import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet

from outpost.callbacks import CallbackPolicy, never_called, parse_prefix
from outpost.guarded_http import (
    AddressRefused,
    GuardedNetworkBackend,
    Resolve,
    callback_client,
    refused_address,
    resolve,
)
from outpost.hub import HubClient
from outpost.models import ServiceId
from outpost.settings import Settings
from tests.conftest import HubReceiver

on_loop = pytest.mark.asyncio(loop_scope="session")

OWN = {8080, 2222}
POLICY = CallbackPolicy({"hubA": ["https://hub.example.org/hub/api/", "http://10.0.0.5:8081"], "hubC": []}, OWN)


@pytest.mark.parametrize(
    "url",
    [
        "https://hub.example.org/hub/api/users/progress/events/alice/",
        "https://hub.example.org/hub/api",
        "https://HUB.example.ORG:443/hub/api/setuptunnel",
        "https://hub.example.org/hub/api/x/../outpostflavors/a",  # normalised to a path under the prefix
        "http://10.0.0.5:8081/anything",
    ],
)
def test_callback_urls_admit_their_origin_and_paths_below(url: str) -> None:
    assert POLICY.refusal("hubA", url) == ""


@pytest.mark.parametrize(
    "url",
    [
        "https://hub.example.org.evil.com/hub/api/",  # a string prefix, another host
        "https://hub.example.org:8443/hub/api/",  # another port
        "http://hub.example.org/hub/api/",  # another scheme (and port)
        "https://evil.com/hub/api/?https://hub.example.org/hub/api/",
        "https://hub.example.org@evil.com/hub/api/",  # user info: the host is evil.com
        "https://hub.example.org/hub/apiary",  # not below the path at a "/"
        "https://hub.example.org/hub/api/../admin",  # dot segments resolve outside the path
        "https://hub.example.org/hub/api/%2e%2e/admin",  # encoded dot segments, which servers may decode
        "https://hub.example.org/",
        "http://10.0.0.5/anything",
        "http://10.0.0.50:8081/",
        "ftp://hub.example.org/hub/api/",
        "not a url",
        "http://[::1",
    ],
)
def test_callback_urls_refuse_everything_else(url: str) -> None:
    assert POLICY.refusal("hubA", url) != ""


def test_an_empty_list_admits_nothing_and_no_list_admits_any_other_address() -> None:
    assert "hubOptions.hubC.callbackUrls" in POLICY.refusal("hubC", "https://hub.example.org/hub/api/")
    assert POLICY.restricts("hubC") and not POLICY.restricts("hubB")
    assert POLICY.refusal("hubB", "https://anywhere.example.net:9999/x") == ""
    assert POLICY.refusal("hubB", "http://127.0.0.1:8081/hub/api") == ""  # a hub on this machine
    assert POLICY.refusal("hubB", "http://10.1.2.3:8080/") == ""  # our port number, another machine


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local or cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "link-local or cloud metadata"),
        ("http://[fe80::1]/", "link-local or cloud metadata"),
        ("http://[fd00:ec2::254]/", "link-local or cloud metadata"),
        ("http://100.100.100.200/", "link-local or cloud metadata"),
        ("http://127.0.0.1:8080/hub/api", "own listener"),
        ("http://0.0.0.0:2222/", "own listener"),
        ("http://[::1]:8080/", "own listener"),
        ("http://127.0.0.2:8080/", "own listener"),
    ],
)
def test_literal_addresses_never_called_are_refused_with_or_without_a_list(url: str, reason: str) -> None:
    assert reason in POLICY.refusal("hubB", url)
    assert POLICY.refusal("hubA", url) != ""


def test_refusals_name_the_variables_of_a_start() -> None:
    env = {
        "JUPYTERHUB_EVENTS_URL": "https://hub.example.org/hub/api/users/progress/events/alice/",
        "JUPYTERHUB_SETUPTUNNEL_URL": "https://evil.example.com/steal",
        "JUPYTERHUB_FLAVORS_UPDATE_URL": "http://169.254.169.254/",
        "JUPYTERHUB_API_URL": "https://anything.example.com/",  # not a callback: never checked
    }
    refused = POLICY.refusals("hubA", env)
    assert [name for name, _ in refused] == ["JUPYTERHUB_SETUPTUNNEL_URL", "JUPYTERHUB_FLAVORS_UPDATE_URL"]
    assert all("evil" not in reason and "169.254.169.254/" not in reason for _, reason in refused)


@pytest.mark.parametrize(
    "entry",
    ["hub.example.org", "ftp://hub.example.org", "https://", "https://u:p@hub.example.org", "https://h/?q=1",
     "https://h/#f", "https://h:99999/", "https://h/a/../b"],
)  # fmt: skip
def test_malformed_prefixes_are_configuration_errors(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_prefix(entry)


def test_never_called_covers_mapped_addresses_and_only_our_ports_locally() -> None:
    local = [ipaddress.ip_address("10.9.8.7")]
    assert never_called(ipaddress.ip_address("::ffff:a9fe:a9fe"), 80, OWN)
    assert never_called(ipaddress.ip_address("10.9.8.7"), 8080, OWN, local)
    assert not never_called(ipaddress.ip_address("10.9.8.7"), 8081, OWN, local)
    assert not never_called(ipaddress.ip_address("10.9.8.8"), 8080, OWN, local)
    assert not never_called(ipaddress.ip_address("192.0.2.1"), 443, OWN)


class SpyBackend(httpcore.AsyncNetworkBackend):
    """The network underneath: records what it is asked to connect to, and connects nowhere."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        raise httpcore.ConnectError("the spy connects nowhere")


def resolver(*answers: list[str]) -> tuple[list[str], Resolve]:
    """A resolver that gives `answers` in turn (a rebinding name), recording the names asked."""
    asked: list[str] = []
    queue = list(answers)

    async def resolve_name(host: str, port: int) -> list[str]:
        asked.append(host)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return asked, resolve_name


@on_loop
async def test_a_metadata_address_is_refused_before_any_connection() -> None:
    spy = SpyBackend()
    guard = GuardedNetworkBackend(OWN, spy)  # the system resolver: a literal address needs no DNS
    with pytest.raises(AddressRefused, match="169.254.169.254 is a link-local or cloud metadata address"):
        await guard.connect_tcp("169.254.169.254", 80, timeout=5)
    assert spy.connects == []


@on_loop
@pytest.mark.parametrize("answer", [["169.254.169.254"], ["192.0.2.10", "169.254.169.254"], ["fe80::1%lo"]])
async def test_a_name_resolving_to_a_metadata_address_is_refused(answer: list[str]) -> None:
    spy = SpyBackend()
    asked, resolve_name = resolver(answer)
    guard = GuardedNetworkBackend(OWN, spy, resolve_name)
    with pytest.raises(AddressRefused):
        await guard.connect_tcp("metadata.example.internal", 80, timeout=5)
    assert asked == ["metadata.example.internal"] and spy.connects == []


@on_loop
async def test_the_connection_goes_to_the_checked_address_not_the_name() -> None:
    """DNS rebinding: a second lookup would answer the metadata address; none is made."""
    spy = SpyBackend()
    asked, resolve_name = resolver(["192.0.2.10"], ["169.254.169.254"])
    guard = GuardedNetworkBackend(OWN, spy, resolve_name)
    with pytest.raises(httpcore.ConnectError, match="the spy connects nowhere"):
        await guard.connect_tcp("rebind.example", 8000, timeout=5)
    assert asked == ["rebind.example"] and spy.connects == [("192.0.2.10", 8000)]


@on_loop
async def test_our_ports_on_any_local_address_are_refused() -> None:
    spy = SpyBackend()
    _, resolve_name = resolver(["10.9.8.7"])
    guard = GuardedNetworkBackend(OWN, spy, resolve_name, local=lambda: {ipaddress.ip_address("10.9.8.7")})
    with pytest.raises(AddressRefused, match="own listener"):
        await guard.connect_tcp("me.example", 2222, timeout=5)
    with pytest.raises(httpcore.ConnectError, match="spy"):
        await guard.connect_tcp("me.example", 8000, timeout=5)
    assert spy.connects == [("10.9.8.7", 8000)]
    with pytest.raises(AddressRefused):
        await guard.connect_unix_socket("/run/outpost.sock")


@on_loop
async def test_the_system_resolver_answers_each_address_once() -> None:
    addresses = await resolve("localhost", 80)
    assert addresses and len(addresses) == len(set(addresses))
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A real TCP listener standing for the outpost's own API: counts the connections it accepts."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, family=socket.AF_INET)
    yield server.sockets[0].getsockname()[1], accepted
    server.close()
    await server.wait_closed()


@on_loop
async def test_the_client_refuses_our_own_port_and_still_calls_a_hub(
    listener: tuple[int, list[int]], hub_receiver: HubReceiver
) -> None:
    port, accepted = listener
    async with callback_client({port}, timeout=5) as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.post(f"http://localhost:{port}/hub/api/users/progress/events/alice/")
        assert "own listener" in refused_address(refused.value)
        response = await client.post(f"{hub_receiver.url}/hub/api/ok", json={"x": 1})
    assert response.status_code == 204 and [c["path"] for c in hub_receiver.calls] == ["/hub/api/ok"]
    assert accepted == []


@on_loop
async def test_the_hub_client_calls_nothing_a_policy_refuses(hub_receiver: HubReceiver) -> None:
    sid = ServiceId("hubA", "srv", "1")
    policy = CallbackPolicy({"hubA": [f"{hub_receiver.url}/allowed"]})
    async with httpx.AsyncClient(timeout=5) as http:
        hub = HubClient(http, retries=3, policy=policy)
        assert not await hub.setup_tunnel(f"{hub_receiver.url}/elsewhere", "api-token", "http://x:1", sid)
        assert not await hub.flavors_update(f"{hub_receiver.url}/allowedx", "admin-token", {}, sid)
        assert await hub.flavors_update(f"{hub_receiver.url}/allowed/flavors", "admin-token", {}, sid)
    assert [c["path"] for c in hub_receiver.calls] == ["/allowed/flavors"]


@pytest.mark.parametrize(
    ("redis_url", "ports"),
    [
        ("unix:///tmp/redis.sock", {9000, 2022}),
        ("redis://localhost", {9000, 2022, 6379}),
        ("redis://r:7000/0", {9000, 2022, 7000}),
    ],
)
def test_the_outpost_s_own_ports_come_from_its_settings(redis_url: str, ports: set[int]) -> None:
    settings = Settings(crypt_key=Fernet.generate_key().decode(), api_port=9000, ssh_port=2022, redis_url=redis_url)
    assert settings.own_ports() == ports

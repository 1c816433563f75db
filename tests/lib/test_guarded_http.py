"""The network backend that connects only to checked addresses: refusals happen before any packet
(the inner backend is never asked), and the connection goes to the address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable

import httpcore
import httpx
import pytest
import pytest_asyncio

from outpost.guarded_http import (
    AddressRefused,
    GuardedNetworkBackend,
    Resolve,
    callback_client,
    refused_address,
    resolve,
)
from tests.conftest import HubReceiver

on_loop = pytest.mark.asyncio(loop_scope="session")

OWN = {8080, 2222}


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

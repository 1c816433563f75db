"""An address belongs to the server that serves it: a hub cannot claim another hub's server address, the
outpost's own ports or any listener; the bind address is the administrator's; a server that is gone
leaves the SSH daemon's address index at once, and its port is free for the next start.

hubA has the README's recommended overrides (`port` and `ip` among them); hubB the default policy."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from outpost.backends.sockets import _proc_listeners
from tests.e2e.processes import wait_until
from tests.security.stack import Stack, decoded, start_body
from tests.sshd.helpers import OpenSSH, Target, exchange, forward

pytestmark = pytest.mark.asyncio


def body(name: str, **misc: Any) -> dict[str, Any]:
    """A start as the OutpostSpawner sends it (misc ip 0.0.0.0 included), with a port only if given."""
    start = start_body(name=name, user=f"user-of-{name}")
    start["misc"] = {**start["misc"], "port": 0, **misc}
    return start


def started_port(stack: Stack, hub: str, name: str, **misc: Any) -> int:
    response = stack.start(hub, body(name, **misc))
    assert response.status_code == 200, response.text
    address = decoded(response)["service"]
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", address)
    assert match, address
    return int(match.group(1))


def record_key(hub: str, name: str) -> str:
    return f"outpost:hub:{hub}:svc:{name}:1"


def refused_as_taken(response: Any, port: int) -> None:
    """A 419 in the protocol's shape that names the address and not who holds it."""
    assert response.status_code == 419, response.text
    message = decoded(response)["args"][0]
    assert f"The address 127.0.0.1:{port} is already in use on the outpost" in message
    assert "hubB" not in response.text and "hubA" not in response.text


def kill_server(port: int) -> None:
    """SIGKILL to the process listening at 127.0.0.1:port (the tiny server, not its `sh` wrapper)."""
    pids = {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert len(pids) == 1, pids
    os.kill(pids.pop(), signal.SIGKILL)
    wait_until(f"127.0.0.1:{port} to close", lambda: not list(_proc_listeners(port)), timeout=10)


def poll_until_gone(stack: Stack, hub: str, name: str) -> int:
    """Poll as the hub does until the answer is an exit code; returns it."""
    seen: list[int] = []

    def gone() -> bool:
        with stack.api(hub) as api:
            status = decoded(api.get(f"/services/{name}/1"))["status"]
        if status is not None:
            seen.append(int(status))
        return status is not None

    wait_until(f"a poll of {name} to see it gone", gone, timeout=20)
    return seen[-1]


async def reply_through(client: OpenSSH, port: int, name: str) -> bytes:
    """What the server at 127.0.0.1:port answers through the hub's SSH tunnel (b"" when refused)."""
    local = await forward(client, Target(port))
    return await exchange(local, f"GET /user/user-of-{name}/ HTTP/1.0\r\n\r\n".encode())


@pytest_asyncio.fixture
async def tunnels(clean: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, OpenSSH]]:
    """Each hub's real OpenSSH client, its master connected to the outpost's SSH daemon."""
    root = Path(tmp_path_factory.mktemp("ssh", numbered=True))
    clients = {hub: clean.ssh(hub, root / hub) for hub in ("hubA", "hubB")}
    for client in clients.values():
        result = await client.start_master()
        assert result.returncode == 0, result.stderr
    yield clients
    for client in clients.values():
        await client.mux("exit")


async def test_a_hub_cannot_claim_another_hubs_server_port(clean: Stack, tunnels: dict[str, OpenSSH]) -> None:
    port = started_port(clean, "hubB", "victim")
    index = clean.address_index()
    assert index == {f"127.0.0.1:{port}": record_key("hubB", "victim")}

    refused_as_taken(clean.start("hubA", body("thief", port=port)), port)
    assert clean.record_keys() == {record_key("hubB", "victim")}  # nothing of hubA's stored
    assert clean.address_index() == index  # the first owner keeps its address
    assert b'"user": "user-of-victim"' in await reply_through(tunnels["hubB"], port, "victim")
    assert await reply_through(tunnels["hubA"], port, "victim") == b""  # hubA's key is refused

    assert clean.stop("hubA", "thief").status_code == 404  # there is nothing of hubA's to delete
    assert clean.address_index() == index
    assert b'"user": "user-of-victim"' in await reply_through(tunnels["hubB"], port, "victim")


@pytest.mark.parametrize("which", ["api", "ssh"])
async def test_a_hub_cannot_point_a_server_address_at_the_outposts_own_ports(clean: Stack, which: str) -> None:
    port = clean.api_port if which == "api" else clean.ssh_port
    refused_as_taken(clean.start("hubA", body("squatter", port=port)), port)
    assert clean.record_keys() == set()
    assert clean.address_index() == {}
    with clean.api("hubA") as api:
        assert api.get("/services").json() == []


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "10.11.12.13", "127.0.0.2"])
async def test_a_hubs_misc_ip_never_moves_the_bind_address(clean: Stack, ip: str) -> None:
    port = started_port(clean, "hubA", "bound", ip=ip)
    assert {str(address) for address, _ in _proc_listeners(port)} == {"127.0.0.1"}
    assert clean.address_index() == {f"127.0.0.1:{port}": record_key("hubA", "bound")}


async def test_a_poll_that_finds_a_server_gone_takes_its_address_out_of_the_index(
    clean: Stack, tunnels: dict[str, OpenSSH]
) -> None:
    port = started_port(clean, "hubB", "short-lived")
    assert clean.address_index() == {f"127.0.0.1:{port}": record_key("hubB", "short-lived")}
    kill_server(port)
    assert clean.address_index() != {}  # nobody has looked yet
    assert poll_until_gone(clean, "hubB", "short-lived") == 137  # SIGKILL, as `sh` records it
    assert clean.address_index() == {}
    assert clean.record_keys() == {record_key("hubB", "short-lived")}  # the record stays until the hub stops it
    assert await reply_through(tunnels["hubB"], port, "short-lived") == b""
    assert clean.stop("hubB", "short-lived").status_code == 200


async def test_a_stale_holder_does_not_block_a_new_start_at_its_port(clean: Stack, tunnels: dict[str, OpenSSH]) -> None:
    port = started_port(clean, "hubB", "stale")
    kill_server(port)  # no poll yet: its record is RUNNING and still holds the address
    assert clean.address_index() == {f"127.0.0.1:{port}": record_key("hubB", "stale")}

    assert started_port(clean, "hubA", "fresh", port=port) == port
    assert clean.address_index() == {f"127.0.0.1:{port}": record_key("hubA", "fresh")}
    assert clean.record_keys() == {record_key("hubB", "stale"), record_key("hubA", "fresh")}
    assert b'"user": "user-of-fresh"' in await reply_through(tunnels["hubA"], port, "fresh")
    assert await reply_through(tunnels["hubB"], port, "fresh") == b""

    assert poll_until_gone(clean, "hubB", "stale") == 137  # the old record ends; the address is not its own
    assert clean.address_index() == {f"127.0.0.1:{port}": record_key("hubA", "fresh")}
    assert clean.stop("hubB", "stale").status_code == 200
    assert clean.address_index() == {f"127.0.0.1:{port}": record_key("hubA", "fresh")}

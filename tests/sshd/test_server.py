"""Local forwards through the daemon with the real OpenSSH client, as forwardbasespawner runs them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re

import httpx
import pytest
from prometheus_client import REGISTRY

from outpost.models import Phase
from outpost.store import Store
from sshd.server import REFUSED, Listener
from tests.sshd.helpers import (
    OpenSSH,
    OpenSSHFactory,
    Target,
    exchange,
    forward,
    forward_lines,
    run_service,
    started,
    until,
)

BULK_BYTES = 64 * 1024 * 1024
CHUNK = 1024 * 1024


@pytest.mark.asyncio
async def test_allowed_forward_carries_http(
    daemon: Listener,
    openssh: OpenSSHFactory,
    store: Store,
    http_server: Target,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hub's running service is reachable through -O forward; the forward is logged open and closed."""
    caplog.set_level(logging.INFO, logger="sshd")
    await run_service(store, "a", "lab", http_server.address)
    client = await started(openssh, daemon)
    local = await forward(client, http_server)

    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{local}/user/alice/api/status")
    assert response.status_code == 200
    assert response.text == "hello from GET /user/alice/api/status HTTP/1.1"

    await until(lambda: bool(forward_lines(caplog, "closed")), what="the 'forward closed' line")
    (opened,) = forward_lines(caplog, "opened")
    assert f"hub=a service=lab/1 dest={http_server.address}" in opened
    (closed,) = forward_lines(caplog, "closed")
    up, down = map(int, re.findall(r"bytes_up=(\d+) bytes_down=(\d+)", closed)[0])
    assert up > 0 and down == len(response.content) + len(b"HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n")
    assert "token" not in caplog.text.lower()


@pytest.mark.asyncio
async def test_bulk_transfer_is_intact(
    daemon: Listener, openssh: OpenSSHFactory, store: Store, echo_server: Target
) -> None:
    """64 MiB each way through the tunnel arrive unchanged (sha256)."""
    await run_service(store, "a", "lab", echo_server.address)
    client = await started(openssh, daemon)
    local = await forward(client, echo_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    sent, received = hashlib.sha256(), hashlib.sha256()
    block = hashlib.shake_256(b"outpost").digest(CHUNK)

    async def send() -> None:
        for i in range(BULK_BYTES // CHUNK):
            chunk = bytes([i % 251]) + block[1:]
            sent.update(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    async def receive() -> int:
        total = 0
        while data := await reader.read(1 << 20):
            received.update(data)
            total += len(data)
        return total

    _, total = await asyncio.wait_for(asyncio.gather(send(), receive()), 60)
    writer.close()
    assert total == BULK_BYTES
    assert received.hexdigest() == sent.hexdigest()


@pytest.mark.asyncio
async def test_check_forward_cancel(
    daemon: Listener, openssh: OpenSSHFactory, store: Store, echo_server: Target
) -> None:
    """-O check answers, -O forward opens a working listener, -O cancel removes it."""
    await run_service(store, "a", "lab", echo_server.address)
    client = await started(openssh, daemon)
    local = await forward(client, echo_server)
    assert await exchange(local, b"ping") == b"ping"

    spec = f"-L127.0.0.1:{local}:127.0.0.1:{echo_server.port}"
    assert (await client.mux("cancel", spec)).returncode == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", local)
    assert (await client.mux("check")).returncode == 0  # the master itself stays up


@pytest.mark.asyncio
async def test_plain_key_reaches_every_hub(
    daemon: Listener, openssh: OpenSSHFactory, store: Store, echo_server: Target
) -> None:
    """A key listed without a hub (as in the seed) may reach any hub's running service."""
    await run_service(store, "b", "lab", echo_server.address)
    client = await started(openssh, daemon, key="all")
    assert await exchange(await forward(client, echo_server), b"hi") == b"hi"


async def assert_refused(client: OpenSSH, target: Target, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    local = await forward(client, target)  # the client accepts the forward; the channel open fails
    assert await exchange(local, b"GET / HTTP/1.1\r\n\r\n") == b""
    await until(lambda: REFUSED in client.log(), what="the client to log the refusal")
    assert "administratively prohibited" in client.log()
    (line,) = forward_lines(caplog, "refused")
    assert line.endswith(f"reason={reason}")
    assert not forward_lines(caplog, "opened")


@pytest.mark.asyncio
async def test_refuses_what_is_not_a_service(
    daemon: Listener, openssh: OpenSSHFactory, echo_server: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """A listening port that is no service (Redis, the API, ...) is never forwarded to."""
    caplog.set_level(logging.INFO, logger="sshd")
    client = await started(openssh, daemon)
    await assert_refused(client, echo_server, caplog, "not-a-service")


@pytest.mark.asyncio
async def test_refuses_another_hubs_service(
    daemon: Listener,
    openssh: OpenSSHFactory,
    store: Store,
    echo_server: Target,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hub a's key cannot reach hub b's running service; the refusal is counted."""
    caplog.set_level(logging.INFO, logger="sshd")
    refused = {"reason": "other-hub"}
    before = REGISTRY.get_sample_value("outpost_sshd_forwards_refused_total", refused) or 0.0
    await run_service(store, "b", "lab", echo_server.address)
    client = await started(openssh, daemon, key="hub_a")
    await assert_refused(client, echo_server, caplog, "other-hub owner=b")
    assert REGISTRY.get_sample_value("outpost_sshd_forwards_refused_total", refused) == before + 1


@pytest.mark.asyncio
async def test_refuses_a_stopped_service(
    daemon: Listener,
    openssh: OpenSSHFactory,
    store: Store,
    echo_server: Target,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once its service stops, new channels to its address fail, on the same master and forward."""
    caplog.set_level(logging.INFO, logger="sshd")
    sid = await run_service(store, "a", "lab", echo_server.address)
    client = await started(openssh, daemon)
    local = await forward(client, echo_server)
    assert await exchange(local, b"before") == b"before"

    assert await store.transition(sid, Phase.STOPPED, (Phase.RUNNING,)) == Phase.RUNNING
    caplog.clear()
    assert await exchange(local, b"after") == b""
    await until(lambda: bool(forward_lines(caplog, "refused")), what="the refusal")
    assert forward_lines(caplog, "refused")[0].endswith("reason=not-running phase=stopped")

    await store.forget(sid)
    caplog.clear()
    assert await exchange(local, b"gone") == b""
    await until(lambda: bool(forward_lines(caplog, "refused")), what="the refusal")
    assert forward_lines(caplog, "refused")[0].endswith("reason=not-a-service")

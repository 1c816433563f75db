"""The forward-only server with the real OpenSSH client: who may connect and what a connected key may
do (local forwards to its hub's running services, as forwardbasespawner runs them; nothing else), the
channel cap, the idle timeout and keepalive."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import signal

import httpx
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from outpost.models import Phase, ServiceId
from outpost.ratelimit import source_id
from outpost.store import Store
from sshd import forwards
from sshd.server import REFUSED, Listener
from tests.sshd.helpers import (
    Daemon,
    OpenSSH,
    OpenSSHFactory,
    Target,
    exchange,
    forward,
    forward_lines,
    free_port,
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

    (opened,) = forward_lines(caplog, "opened")
    assert f"hub=a service=lab/1 dest={http_server.address}" in opened
    await client.mux("exit")  # the connection closes: its forwards are summed up
    await until(lambda: bool(summaries(caplog)), what="the 'forwards' line")
    (summary,) = summaries(caplog)
    assert f"hub=a service=lab/1 dest={http_server.address}" in summary
    assert "opened=1 closed=1 open=0 " in summary
    up, down = map(int, re.findall(r"bytes_up=(\d+) bytes_down=(\d+)", summary)[0])
    assert up > 0 and down == len(response.content) + len(b"HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n")
    assert "token" not in caplog.text.lower()


def summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("forwards ")]


@pytest_asyncio.fixture
async def echo_forward(
    daemon: Listener, openssh: OpenSSHFactory, store: Store, echo_server: Target, caplog: pytest.LogCaptureFixture
) -> tuple[OpenSSH, int]:
    """A master of hub a with a forward to its running echo service (INFO lines captured): client, local port."""
    caplog.set_level(logging.INFO, logger="sshd")
    await run_service(store, "a", "lab", echo_server.address)
    client = await started(openssh, daemon)
    return client, await forward(client, echo_server)


@pytest.mark.asyncio
async def test_a_connections_forwards_to_one_service_are_logged_once_and_summed_up(
    echo_forward: tuple[OpenSSH, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Channel after channel to one service writes one 'forward opened' line, not one per channel; the
    connection's close writes their sum (channels and bytes)."""
    client, local = echo_forward
    for _ in range(5):
        assert await exchange(local, b"12345") == b"12345"
    await until(lambda: REGISTRY.get_sample_value("outpost_sshd_forwards_open") == 0, what="the channels to close")
    assert len(forward_lines(caplog, "opened")) == 1
    assert not summaries(caplog)
    await client.mux("exit")
    await until(lambda: bool(summaries(caplog)), what="the 'forwards' line")
    (summary,) = summaries(caplog)
    assert "opened=5 closed=5 open=0 bytes_up=25 bytes_down=25 " in summary


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


async def tunnelled(store: Store, sid: ServiceId) -> bool:
    meta = await store.meta(sid)
    assert meta is not None
    return meta.tunnelled


@pytest.mark.asyncio
async def test_a_forward_notes_the_tunnel_in_the_record(
    daemon: Listener, openssh: OpenSSHFactory, store: Store, echo_server: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a service a channel was opened to is noted as tunnelled (what a restarted daemon recreates); the
    hub's other service, and another hub's service the key was refused, are not."""
    caplog.set_level(logging.INFO, logger="sshd")
    sid = await run_service(store, "a", "lab", echo_server.address)
    untouched = await run_service(store, "a", "other", f"127.0.0.1:{free_port()}")
    client = await started(openssh, daemon)
    local = await forward(client, echo_server)  # -O forward alone opens no channel: nothing noted yet
    assert not await tunnelled(store, sid)

    for payload in (b"one", b"two"):
        assert await exchange(local, payload) == payload

    assert await tunnelled(store, sid)
    assert not await tunnelled(store, untouched)
    await store.forget(sid)
    elsewhere = await run_service(store, "b", "lab", echo_server.address)
    caplog.clear()
    await assert_refused(client, echo_server, caplog, "other-hub owner=b")
    assert not await tunnelled(store, elsewhere)


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


@pytest.mark.asyncio
@pytest.mark.parametrize(("key", "user"), [("stranger", "jhuboutpost"), ("hub_a", "root")])
async def test_unknown_key_or_user_is_refused(daemon: Listener, openssh: OpenSSHFactory, key: str, user: str) -> None:
    """A key that is not authorized, or an authorized key for another login name, cannot log in."""
    client = openssh(daemon.port, key, user)
    result = await client.start_master()
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    assert (await client.mux("check")).returncode != 0


@pytest.mark.asyncio
async def test_refused_keys_are_failed_logins_of_their_source(
    start_daemon: Daemon, openssh: OpenSSHFactory, store: Store
) -> None:
    """Each refused key is counted before it is answered; past the budget the source is disconnected,
    even with a listed key, while the same key logs in from another address."""
    daemon = await start_daemon(auth_failures_per_source=2)
    for _ in range(2):
        refused = await openssh(daemon.port, "stranger").start_master("-oBindAddress=127.0.0.7")
        assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr
    closed = await openssh(daemon.port, "hub_a").start_master("-oBindAddress=127.0.0.7")
    assert closed.returncode == 255 and "too many failed logins" in closed.stderr
    assert await store.logins.blocked(source_id("127.0.0.7"))
    assert (await openssh(daemon.port, "hub_a").start_master("-oBindAddress=127.0.0.8")).returncode == 0


@pytest.mark.asyncio
async def test_only_public_key_auth_is_offered(daemon: Listener, openssh: OpenSSHFactory) -> None:
    """Asking for password or keyboard-interactive gets "publickey" as the only method on offer."""
    client = openssh(daemon.port, "stranger")
    result = await client.run(
        *client.options("-oPreferredAuthentications=password,keyboard-interactive", multiplex=False),
        "-T", client.destination, "true",
    )  # fmt: skip
    assert result.returncode == 255
    assert "Permission denied (publickey)." in result.stderr


@pytest.mark.asyncio
@pytest.mark.parametrize("multiplex", [False, True], ids=["own-connection", "through-master"])
@pytest.mark.parametrize(
    ("flags", "command"),
    [(["-T"], []), (["-T"], ["echo", "pwned"]), (["-s"], ["sftp"])],
    ids=["shell", "exec", "sftp"],
)
async def test_sessions_are_refused(
    daemon: Listener, openssh: OpenSSHFactory, flags: list[str], command: list[str], multiplex: bool
) -> None:
    """A shell, a command or a subsystem needs a session channel, which is never opened."""
    client = await started(openssh, daemon) if multiplex else openssh(daemon.port)
    result = await client.run(*client.options(multiplex=multiplex), *flags, client.destination, *command)
    assert result.returncode == 255, result
    assert "Session refused" in result.stderr
    assert "pwned" not in result.stdout


@pytest.mark.asyncio
async def test_remote_forward_is_refused(daemon: Listener, openssh: OpenSSHFactory, echo_server: Target) -> None:
    """-R would let a key holder listen inside the outpost's network: refused."""
    client = await started(openssh, daemon)
    result = await client.mux("forward", f"-R127.0.0.1:0:127.0.0.1:{echo_server.port}")
    assert result.returncode != 0
    assert "remote port forwarding failed" in result.stderr


@pytest.mark.asyncio
async def test_channels_per_connection_are_capped(
    start_daemon: Daemon,
    openssh: OpenSSHFactory,
    store: Store,
    echo_server: Target,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a cap of 1, a second concurrent channel is refused; once the first closes, it opens."""
    caplog.set_level(logging.INFO, logger="sshd")
    daemon = await start_daemon(ssh_max_channels_per_connection=1)
    await run_service(store, "a", "lab", echo_server.address)
    client = await started(openssh, daemon)
    local = await forward(client, echo_server)

    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    writer.write(b"held")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    assert await exchange(local, b"second") == b""
    await until(lambda: bool(forward_lines(caplog, "refused")), what="the refusal")
    assert forward_lines(caplog, "refused")[0].endswith("reason=channel-limit")

    writer.close()
    await until(lambda: REGISTRY.get_sample_value("outpost_sshd_forwards_open") == 0, what="the first to close")
    assert await exchange(local, b"third") == b"third"


@pytest.mark.asyncio
async def test_idle_connection_is_closed(
    start_daemon: Daemon, openssh: OpenSSHFactory, store: Store, echo_server: Target
) -> None:
    """A connection without forwards for the idle timeout is closed; an open forward keeps it."""
    daemon = await start_daemon(ssh_idle_timeout_seconds=1)
    await run_service(store, "a", "lab", echo_server.address)
    client = await started(openssh, daemon)
    local = await forward(client, echo_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"

    await asyncio.sleep(1.5)  # longer than the timeout, with a channel open
    assert (await client.mux("check")).returncode == 0
    writer.close()
    await until(lambda: not client.control_path.exists(), timeout=5, what="the idle master to be closed")


@pytest.mark.asyncio
async def test_unresponsive_client_is_dropped(
    start_daemon: Daemon, openssh: OpenSSHFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Keepalives find a client that stopped answering (here: SIGSTOP) and close its connection."""
    caplog.set_level(logging.INFO, logger="sshd")
    daemon = await start_daemon(ssh_keepalive_seconds=1)
    client = await started(openssh, daemon)
    pid = await client.master_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        await until(lambda: "connection closed" in caplog.text, timeout=8, what="the keepalive to give up")
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.asyncio
async def test_a_long_lived_connection_sums_up_its_forwards_every_period(
    echo_forward: tuple[OpenSSH, int], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub's master stays connected for days: its forwards are summed up each period, not only at its close;
    a period without channels writes nothing."""
    monkeypatch.setattr(forwards, "SUMMARY_SECONDS", 0.2)
    client, local = echo_forward
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    writer.write(b"held")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    await until(lambda: bool(summaries(caplog)), what="a summary while the connection lasts")
    assert "opened=1 closed=0 open=1 " in summaries(caplog)[0]
    writer.close()
    await until(lambda: any("closed=1 open=0" in line for line in summaries(caplog)), what="the close's summary")
    assert (await client.mux("check")).returncode == 0  # all while connected

"""Channel cap, idle timeout and keepalive, against the real OpenSSH client."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from outpost.store import Store
from tests.sshd.helpers import (
    Daemon,
    OpenSSHFactory,
    Target,
    exchange,
    forward,
    forward_lines,
    run_service,
    started,
    until,
)


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
    await until(lambda: bool(forward_lines(caplog, "closed")), what="the first forward to close")
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

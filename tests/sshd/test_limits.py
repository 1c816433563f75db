"""How many connections one authorized key may hold open at once: the counter, and the cap as the
daemon applies it (a key's public-key queries, which anyone can make, do not count)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncssh
import pytest

from outpost.settings import Settings
from outpost.store import Store
from sshd.limits import ConnectionCounter
from sshd.server import ForwardOnlyServer, Policy
from tests.sshd.helpers import USER, ClientKey, Daemon, OpenSSHFactory, started, until


def test_connection_counter() -> None:
    counter = ConnectionCounter(limit=2)
    first, second, third = object(), object(), object()
    assert counter.claim("k", first) and counter.claim("k", first)  # asyncssh validates a key twice
    assert counter.claim("k", second)
    assert not counter.claim("k", third)
    assert counter.claim("other", third)
    counter.release("k", first)
    assert counter.count("k") == 1
    assert counter.claim("k", third)
    counter.release("k", second)
    counter.release("k", third)
    counter.release("k", third)
    assert counter.count("k") == 0


@pytest.mark.asyncio
async def test_connections_per_key_are_capped(
    start_daemon: Daemon, openssh: OpenSSHFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With a cap of 1, a key's second connection is refused until its first one closes."""
    caplog.set_level(logging.INFO, logger="sshd")
    daemon = await start_daemon(ssh_max_connections_per_key=1)
    first = await started(openssh, daemon, key="hub_a")
    second = openssh(daemon.port, "hub_a")
    assert (await second.start_master()).returncode == 255
    assert "already 1 connections with this key" in caplog.text
    await started(openssh, daemon, key="hub_b")  # the cap is per key

    assert (await first.mux("exit")).returncode == 0
    await until(lambda: "connection closed" in caplog.text, what="the daemon to see the first master go")
    assert (await second.start_master()).returncode == 0
    assert (await second.mux("check")).returncode == 0


@pytest.mark.asyncio
async def test_public_key_queries_do_not_fill_the_cap(
    make_settings: Callable[..., Settings], client_keys: dict[str, ClientKey], store: Store
) -> None:
    """Public keys are public: asking "would you take this key?" without the private key must not
    count against the cap, or anyone could lock a hub out."""
    policy = Policy(make_settings(ssh_max_connections_per_key=1), store)
    key = asyncssh.import_public_key(client_keys["hub_a"].public)
    for _ in range(5):
        assert await ForwardOnlyServer(policy).validate_public_key(USER, key)
    assert policy.connections.count(key.get_fingerprint()) == 0


async def _banner_or_eof(port: int, source: str) -> tuple[bytes, asyncio.StreamWriter]:
    """What the daemon sends a new connection from `source` first: its version line, or b"" (closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return await asyncio.wait_for(reader.readline(), 10), writer


@pytest.mark.asyncio
async def test_unauthenticated_connections_are_capped_per_source(start_daemon: Daemon) -> None:
    daemon = await start_daemon(ssh_max_startups_per_source=2, ssh_max_startups="10:30:100")
    held = [await _banner_or_eof(daemon.port, "127.0.0.5") for _ in range(2)]
    assert all(line.startswith(b"SSH-2.0-OutpostSSHD") for line, _ in held)
    refused, writer = await _banner_or_eof(daemon.port, "127.0.0.5")
    assert refused == b""  # closed before the version exchange
    other, other_writer = await _banner_or_eof(daemon.port, "127.0.0.6")  # another source is not affected
    assert other.startswith(b"SSH-2.0-OutpostSSHD")
    for _, w in [*held, (refused, writer), (other, other_writer)]:
        w.close()


@pytest.mark.asyncio
async def test_an_authenticated_connection_stops_counting(start_daemon: Daemon, openssh: OpenSSHFactory) -> None:
    """A hub's master holds its connection for days: it must not hold a startup of its source too."""
    daemon = await start_daemon(ssh_max_startups_per_source=1, ssh_max_startups="1")
    await started(openssh, daemon, key="hub_a")
    await started(openssh, daemon, key="hub_b")  # the same source, one startup: the first one ended

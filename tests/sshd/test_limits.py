"""How many connections one authorized key may hold open at once: the counter, and the cap as the
daemon applies it (a key's public-key queries, which anyone can make, do not count)."""

from __future__ import annotations

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

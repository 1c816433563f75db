"""The destination check from memory (`sshd.addresses`), with the real daemon, Redis and OpenSSH client: a
cached owner serves forwards without Redis; a withdrawn address is refused once the store publishes the
change, or once the cache's staleness runs out when the change is lost; a broken subscription drops the
cache, the daemon asks Redis meanwhile, and follows the changes again once resubscribed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from outpost.models import Phase, ServiceId
from outpost.store import Store
from outpost.store.keys import ADDRESSES, key_record
from tests.sshd.helpers import Daemon, OpenSSHFactory, Target, exchange, forward, run_service, started, until

pytestmark = pytest.mark.asyncio
CachedFactory = Callable[[float], Awaitable["Cached"]]
PAYLOAD = b"through the tunnel"
LONG = 300.0  # the largest staleness: within a test, only a change notice can drop an entry


async def served(local: int) -> bool:
    return await exchange(local, PAYLOAD) == PAYLOAD


async def refused_soon(local: int, timeout: float = 10.0) -> None:
    """Wait, with a deadline, until a new channel to `local`'s destination is refused."""
    deadline = time.monotonic() + timeout
    while await served(local):
        if time.monotonic() > deadline:
            raise AssertionError(f"still forwarded after {timeout}s")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Cached:
    """A running service of hub a, forwarded to through the daemon, its owner cached."""

    sid: ServiceId
    address: str
    local: int  # the local end of the forward: each connection opens a channel


@pytest_asyncio.fixture
async def cached(
    start_daemon: Daemon,
    openssh: OpenSSHFactory,
    store: Store,
    echo_server: Target,
    caplog: pytest.LogCaptureFixture,
) -> Callable[[float], Awaitable[Cached]]:
    """`await cached(staleness)`: the daemon with that `ssh_address_cache_seconds`, subscribed; a forward
    to a running service that has carried one connection (so its owner is in memory)."""
    caplog.set_level(logging.INFO, logger="sshd")

    async def make(staleness: float) -> Cached:
        daemon = await start_daemon(ssh_address_cache_seconds=staleness)
        await wait_live(caplog)
        sid = await run_service(store, "a", "lab", echo_server.address)
        local = await forward(await started(openssh, daemon), echo_server)
        assert await served(local)
        return Cached(sid, echo_server.address, local)

    return make


async def wait_live(caplog: pytest.LogCaptureFixture, times: int = 1) -> None:
    await until(
        lambda: sum(r.getMessage().startswith("address cache on") for r in caplog.records) >= times,
        what="the address cache to follow the changes",
    )


async def test_a_cached_owner_serves_without_redis_and_a_published_withdrawal_refuses(
    cached: CachedFactory, store: Store, redis: aioredis.Redis
) -> None:
    forwarded = await cached(LONG)
    await redis.hdel(ADDRESSES, forwarded.address)  # behind the store's back: nothing is published
    assert await served(forwarded.local)  # answered from memory

    await redis.hset(ADDRESSES, forwarded.address, key_record(forwarded.sid))
    await store.mark_ended(forwarded.sid, 0)  # the poll that finds the server gone: withdraws and publishes
    await refused_soon(forwarded.local)


async def test_a_stopping_service_is_refused_once_its_phase_moves(cached: CachedFactory, store: Store) -> None:
    forwarded = await cached(LONG)
    await store.transition(forwarded.sid, Phase.STOPPING, (Phase.RUNNING,))  # the address stays in the index
    await refused_soon(forwarded.local)


async def test_a_lost_change_is_refused_once_the_staleness_runs_out(
    cached: CachedFactory, redis: aioredis.Redis
) -> None:
    forwarded = await cached(0.5)
    await redis.hdel(ADDRESSES, forwarded.address)  # a change whose notice never comes
    await refused_soon(forwarded.local)


async def test_a_broken_subscription_drops_the_cache_and_is_followed_again(
    cached: CachedFactory, store: Store, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    forwarded = await cached(LONG)
    await redis.client_kill_filter(_type="pubsub")  # as a failover or a Redis restart would
    await until(lambda: "address cache off" in caplog.text, what="the daemon to notice")
    await redis.hdel(ADDRESSES, forwarded.address)  # unpublished: only a dropped cache lets this through
    await refused_soon(forwarded.local)

    await wait_live(caplog, times=2)  # resubscribed
    await redis.hset(ADDRESSES, forwarded.address, key_record(forwarded.sid))
    assert await served(forwarded.local)
    await redis.hdel(ADDRESSES, forwarded.address)
    assert await served(forwarded.local)  # cached again
    await redis.hset(ADDRESSES, forwarded.address, key_record(forwarded.sid))
    await store.forget(forwarded.sid)  # changes are followed again
    await refused_soon(forwarded.local)

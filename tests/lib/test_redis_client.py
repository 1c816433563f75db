"""More Redis commands in flight than a process has connections wait for a free one instead of failing:
a storm of starts is served, not answered 503 (bench/storm.py found it at 300 starts). Both ways to reach
Redis: a URL, and the primary the sentinels name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from outpost.cli.embedded_redis import redis_server_binary
from outpost.redis_client import REDIS_CONNECTIONS, FairBlockingConnectionPool, FairSentinelConnectionPool
from outpost.runtime import build_runtime
from outpost.settings import Settings
from tests.ha.cluster import MASTER, Node, free_port, sentinel_config, server_config, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _all_answered(settings: Settings) -> list[tuple[int, int, int]]:
    runtime = build_runtime(settings)
    try:
        assert runtime.store.connection_pool.max_connections == REDIS_CONNECTIONS
        reads = [runtime.store.usage("hubA", f"user{i}", "small") for i in range(3 * REDIS_CONNECTIONS)]
        return list(await asyncio.gather(*reads))
    finally:
        await runtime.aclose()


async def test_more_commands_in_flight_than_connections_all_succeed(settings: Settings) -> None:
    assert await _all_answered(settings) == [(0, 0, 0)] * (3 * REDIS_CONNECTIONS)


@pytest.fixture
def primary_and_sentinel(tmp_path: Path) -> Iterator[str]:
    """A primary on loopback (a sentinel cannot watch the tests' Unix-socket Redis) and one sentinel
    (quorum 1) that names it: the value of OUTPOST_REDIS_SENTINELS."""
    binary = redis_server_binary()
    primary_port, sentinel_port = free_port(), free_port()
    primary = Node(binary, tmp_path / "primary", primary_port, server_config(tmp_path / "primary", primary_port))
    sentinel_dir = tmp_path / "sentinel"
    config = sentinel_config(sentinel_dir, sentinel_port, primary_port).replace(" 2\n", " 1\n", 1)
    sentinel = Node(binary, sentinel_dir, sentinel_port, config, sentinel=True)
    try:
        primary.start()
        sentinel.start()
        wait_for(lambda: bool(sentinel.client().sentinel_get_master_addr_by_name(MASTER)), 10, "the sentinel")
        yield f"127.0.0.1:{sentinel_port}"
    finally:
        sentinel.kill()
        primary.kill()


async def test_through_the_sentinels_too(primary_and_sentinel: str, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url=None, redis_sentinels=primary_and_sentinel, redis_sentinel_master=MASTER)
    runtime = build_runtime(settings)
    assert isinstance(runtime.store.connection_pool, FairSentinelConnectionPool)
    await runtime.aclose()
    assert await _all_answered(settings) == [(0, 0, 0)] * (3 * REDIS_CONNECTIONS)


async def test_a_command_waiting_for_a_connection_is_served_before_a_later_one(redis_url: str) -> None:
    """First come, first served: redis-py's BlockingConnectionPool lets a newcomer take the connection a
    woken waiter was told of, so under a storm the first to wait could wait out the whole timeout."""
    pool = FairBlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=5)
    order: list[str] = []
    held = await pool.get_connection()

    async def waiter() -> None:
        connection = await pool.get_connection()
        order.append("waiter")
        await pool.release(connection)

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.05)  # the waiter is queued
    await pool.release(held)
    again = await pool.get_connection()  # at once, before the waiter has run
    order.append("later")
    await pool.release(again)
    await waiting
    await pool.disconnect()
    assert order == ["waiter", "later"]


async def test_no_free_connection_within_the_timeout_is_a_connection_error(redis_url: str) -> None:
    pool = FairBlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=0.1)
    held = await pool.get_connection()
    with pytest.raises(RedisConnectionError, match="No connection available"):
        await pool.get_connection()
    await pool.release(held)
    await pool.release(await pool.get_connection())  # the turn given back: the next one is served
    await pool.disconnect()

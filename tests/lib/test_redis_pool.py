"""More Redis commands in flight than a process has connections wait for a free one instead of failing:
a storm of starts is served, not answered 503 (bench/storm.py found it at 300 starts). Both ways to reach
Redis: a URL, and the primary the sentinels name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outpost.embedded_redis import redis_server_binary
from outpost.redis_client import REDIS_CONNECTIONS, BlockingSentinelConnectionPool
from outpost.runtime import build_runtime
from outpost.settings import Settings
from tests.ha.cluster import MASTER, Node, free_port, sentinel_config, server_config, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _all_answered(settings: Settings) -> list[tuple[int, int, int]]:
    runtime = build_runtime(settings)
    try:
        assert runtime.store.redis.connection_pool.max_connections == REDIS_CONNECTIONS
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
    assert isinstance(runtime.store.redis.connection_pool, BlockingSentinelConnectionPool)
    await runtime.aclose()
    assert await _all_answered(settings) == [(0, 0, 0)] * (3 * REDIS_CONNECTIONS)

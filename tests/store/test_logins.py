"""The failed-login counters (`outpost.store.LoginCounters`) on a real Redis: windows, blocks, known sources."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from outpost.store import LoginCounters
from outpost.store.keys import key_login

pytestmark = pytest.mark.asyncio


async def test_failures_count_per_source_and_per_bucket_in_a_window_that_starts_with_the_first(
    redis: aioredis.Redis,
) -> None:
    counts = LoginCounters(redis)
    assert await counts.count_failure("s1", "7", 60) == 1
    assert await counts.count_failure("s1", "7", 60) == 2
    assert await counts.count_failure("s2", "7", 60) == 1  # another source, the same bucket
    assert await counts.standing("s1", "7") == (False, 3)
    assert 0 < await redis.ttl(key_login("fails-source", "s1")) <= 60
    assert 0 < await redis.ttl(key_login("fails-hub", "7")) <= 60


async def test_a_block_expires_with_its_window(redis: aioredis.Redis) -> None:
    counts = LoginCounters(redis)
    await counts.block("s1", 30)
    assert await counts.standing("s1", "0") == (True, 0)
    assert await counts.standing("s2", "0") == (False, 0)
    assert 0 < await redis.ttl(key_login("block", "s1")) <= 30


async def test_a_known_source_is_remembered_per_bucket_for_a_week(redis: aioredis.Redis) -> None:
    counts = LoginCounters(redis)
    assert not await counts.known_source("7", "s1")
    await counts.note_known_source("7", "s1")
    assert await counts.known_source("7", "s1")
    assert not await counts.known_source("8", "s1")
    assert 6 * 86400 < await redis.ttl(key_login("good", "7")) <= 7 * 86400

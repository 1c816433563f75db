"""The failed-login counters (`outpost.store.LoginCounters`) on a real Redis: windows, budgets, blocks."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from outpost.ratelimit import LoginLimits
from outpost.store import LoginCounters
from outpost.store.keys import key_login

pytestmark = pytest.mark.asyncio
LIMITS = LoginLimits(per_source=3, per_hub=4, window_seconds=60)


async def test_failures_count_per_source_and_per_bucket_in_a_window_that_starts_with_the_first(
    redis: aioredis.Redis,
) -> None:
    counts = LoginCounters(redis)
    assert await counts.count_failure("s1", "7", LIMITS)
    assert await counts.count_failure("s1", "7", LIMITS)
    assert await counts.count_failure("s2", "7", LIMITS)  # another source, the same bucket
    assert await counts.count_failure("s2", None, LIMITS)  # an SSH key: no bucket
    assert [int(await redis.get(key_login(kind, value)) or 0) for kind, value in
            [("fails-source", "s1"), ("fails-source", "s2"), ("fails-hub", "7")]] == [2, 2, 3]  # fmt: skip
    assert 0 < await redis.ttl(key_login("fails-source", "s1")) <= 60
    assert 0 < await redis.ttl(key_login("fails-hub", "7")) <= 60
    assert not await counts.blocked("s1")


async def test_the_last_failure_of_a_budget_blocks_and_later_ones_are_refused_uncounted(
    redis: aioredis.Redis,
) -> None:
    counts = LoginCounters(redis)
    assert [await counts.count_failure("s1", "7", LIMITS) for _ in range(5)] == [True, True, True, False, False]
    assert await counts.blocked("s1") and not await counts.blocked("s2")
    assert 0 < await redis.ttl(key_login("block", "s1")) <= 60
    assert int(await redis.get(key_login("fails-hub", "7")) or 0) == 3


async def test_over_the_bucket_limit_a_source_gets_one_failure(redis: aioredis.Redis) -> None:
    counts = LoginCounters(redis)
    for source in ("a", "b"):
        assert await counts.count_failure(source, "7", LIMITS)
        assert await counts.count_failure(source, "7", LIMITS)  # the bucket holds 4: its limit
    assert await counts.count_failure("c", "7", LIMITS)  # the 5th of the bucket: c's first and last
    assert await counts.blocked("c")
    assert await counts.count_failure("d", "8", LIMITS)  # another bucket: the full budget
    assert not await counts.blocked("d")

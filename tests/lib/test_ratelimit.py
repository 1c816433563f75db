"""Failed logins limited per source and per hub name, in a real Redis: a source that guesses too often
is closed, a hub name under attack stays open to the sources it logged in from, and what reaches
Redis is hashed and bounded whatever the request said.

tests/security/test_login_limits.py checks the same through a running stack and X-Forwarded-For."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from outpost.errors import TooManyAttempts
from outpost.ratelimit import HUB_BUCKETS, LoginGuard, LoginLimits, hub_bucket, source_id
from outpost.store.logins import LoginCounters

on_loop = pytest.mark.asyncio(loop_scope="session")
HOME, ATTACKER, NEWCOMER = "192.0.2.1", "198.51.100.66", "203.0.113.5"


@on_loop
async def test_a_source_is_closed_after_its_failures_and_for_the_window(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=3, per_hub=100, window_seconds=30))
    for _ in range(2):
        await guard.check(ATTACKER, "hubA")
        await guard.failed(ATTACKER, "hubA")
    await guard.check(ATTACKER, "hubA")  # two failures: still open
    await guard.failed(ATTACKER, "hubB")  # the third, for any hub name
    with pytest.raises(TooManyAttempts) as caught:
        await guard.check(ATTACKER, "hubC")
    assert caught.value.retry_after == 30
    await guard.check(HOME, "hubA")  # other sources are not affected
    assert 0 < await redis.ttl(f"outpost:auth:block:{source_id(ATTACKER)}") <= 30


@on_loop
async def test_a_hub_under_attack_stays_open_to_its_own_sources(redis: aioredis.Redis) -> None:
    limits = LoginLimits(per_source=1000, per_hub=3, window_seconds=60)
    guard = LoginGuard(LoginCounters(redis), limits)
    await guard.check(HOME, "hubA")
    await guard.succeeded(HOME, "hubA")
    for _ in range(3):
        await guard.failed(ATTACKER, "hubA")
    with pytest.raises(TooManyAttempts):
        await guard.check(ATTACKER, "hubA")
    with pytest.raises(TooManyAttempts):
        await guard.check(NEWCOMER, "hubA")  # a source never seen logging in as hubA
    await LoginGuard(LoginCounters(redis), limits).check(HOME, "hubA")  # another instance agrees: the hub's own source
    other = next(name for name in (f"hub{i}" for i in range(100)) if hub_bucket(name) != hub_bucket("hubA"))
    await guard.check(NEWCOMER, other)  # other hub names are not closed


@on_loop
async def test_failures_in_a_window_expire_with_it(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=2, per_hub=100, window_seconds=1))
    await guard.failed(ATTACKER, "hubA")
    await asyncio.sleep(1.2)
    await guard.failed(ATTACKER, "hubA")  # the first failure's window has ended
    await guard.check(ATTACKER, "hubA")


@on_loop
async def test_a_failure_is_seen_at_once_by_the_instance_that_counted_it(redis: aioredis.Redis) -> None:
    """`check` trusts its last look for a second, but a failure drops that look for its source and hub."""
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=1, per_hub=100, window_seconds=60))
    await guard.check(ATTACKER, "hubA")
    await guard.failed(ATTACKER, "hubA")
    with pytest.raises(TooManyAttempts):
        await guard.check(ATTACKER, "hubA")


@on_loop
async def test_redis_holds_only_hashes_and_few_keys_for_many_names(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=10**6, per_hub=10**6, window_seconds=60))
    names = [f"hub-{i}-" + "x" * 2000 for i in range(200)]
    for name in names:
        await guard.failed("evil\nsource " + "y" * 3000, name)
    await guard.succeeded(HOME, "hübA")
    keys = [key.decode() for key in await redis.keys("outpost:auth:*")]
    assert len(keys) <= 2 + min(len(names), HUB_BUCKETS) + 1
    assert all(len(key) < 64 for key in keys)
    stored = b" ".join([*map(str.encode, keys), *await redis.smembers(f"outpost:auth:good:{hub_bucket('hübA')}")])
    assert b"evil" not in stored and b"hub-" not in stored and HOME.encode() not in stored


def test_ids_are_fixed_size_and_buckets_bounded() -> None:
    assert len(source_id("1.2.3.4")) == len(source_id("x" * 10_000)) == 32
    assert source_id("a" * 5000 + "1") != source_id("a" * 5000 + "2")  # differ late, still apart
    assert {int(hub_bucket(f"hub{i}")) for i in range(5000)} <= set(range(HUB_BUCKETS))
    assert hub_bucket("\udcff") == hub_bucket("\udcff")  # a lone surrogate (latin-1 header) still hashes


class CountedReads(LoginCounters):
    """The real counters, counting the standing reads."""

    reads = 0

    async def standing(self, source: str, bucket: str) -> tuple[bool, int]:
        self.reads += 1
        return await super().standing(source, bucket)


@on_loop
async def test_a_burst_of_checks_shares_one_read_and_its_answer(redis: aioredis.Redis) -> None:
    counts = CountedReads(redis)
    guard = LoginGuard(counts, LoginLimits(per_source=1, per_hub=100, window_seconds=30))
    await asyncio.gather(*(guard.check("192.0.2.77", "hubA") for _ in range(20)))
    assert counts.reads == 1
    await guard.failed("192.0.2.78", "hubA")  # closes that source
    outcomes = await asyncio.gather(*(guard.check("192.0.2.78", "hubA") for _ in range(20)), return_exceptions=True)
    assert counts.reads == 2 and all(isinstance(outcome, TooManyAttempts) for outcome in outcomes)

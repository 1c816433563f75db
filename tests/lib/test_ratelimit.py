"""Failed logins limited per source, in a real Redis: a source that guesses too often is closed, even to
concurrent guesses; no one else's failures close a hub to a source without failures; a hub name under
attack gives each source one failure; what reaches Redis is hashed and bounded whatever the request said.

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


async def outcomes(guard: LoginGuard, source: str, hub: str | None, n: int) -> list[str]:
    async def one() -> str:
        try:
            await guard.fail(source, hub)
        except TooManyAttempts:
            return "refused"
        return "counted"

    return sorted(await asyncio.gather(*(one() for _ in range(n))))


@on_loop
async def test_a_source_is_closed_after_its_failures_and_for_the_window(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=3, per_hub=100, window_seconds=30))
    await guard.fail(ATTACKER, "hubA")
    await guard.fail(ATTACKER, "hubA")
    await guard.admit(ATTACKER)  # two failures: still open
    await guard.fail(ATTACKER, "hubB")  # the third, for any hub name, is still answered as checked
    with pytest.raises(TooManyAttempts) as caught:
        await guard.admit(ATTACKER)
    assert caught.value.retry_after == 30
    with pytest.raises(TooManyAttempts):
        await guard.fail(ATTACKER, "hubC")
    await guard.admit(HOME)  # other sources are not affected
    assert 0 < await redis.ttl(f"outpost:auth:block:{source_id(ATTACKER)}") <= 30


@on_loop
async def test_concurrent_failures_of_one_source_cost_exactly_its_budget(redis: aioredis.Redis) -> None:
    """The count is taken with the verdict: 40 at once, over two instances, are 5 counted and 35 refused."""
    limits = LoginLimits(per_source=5, per_hub=1000, window_seconds=60)
    first, second = LoginGuard(LoginCounters(redis), limits), LoginGuard(LoginCounters(redis), limits)
    results = await asyncio.gather(outcomes(first, ATTACKER, "hubA", 20), outcomes(second, ATTACKER, "hubA", 20))
    assert sorted(results[0] + results[1]) == ["counted"] * 5 + ["refused"] * 35
    assert int(await redis.get(f"outpost:auth:fails-hub:{hub_bucket('hubA')}") or 0) == 5  # refused ones are not


@on_loop
async def test_no_one_elses_failures_close_a_hub_to_a_source_without_failures(redis: aioredis.Redis) -> None:
    """Over the hub limit, each source gets one failure; the right password from a clean source still passes."""
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=1000, per_hub=3, window_seconds=60))
    assert await outcomes(guard, ATTACKER, "hubA", 10) == ["counted"] * 3 + ["refused"] * 7
    await guard.admit(NEWCOMER)  # a source never seen before, with the right password
    await guard.fail(NEWCOMER, "hubA")  # under attack: its first failure counts and closes it
    with pytest.raises(TooManyAttempts):
        await guard.admit(NEWCOMER)
    other = next(name for name in (f"hub{i}" for i in range(100)) if hub_bucket(name) != hub_bucket("hubA"))
    assert await outcomes(guard, HOME, other, 3) == ["counted"] * 3  # another bucket: not under attack


@on_loop
async def test_failures_in_a_window_expire_with_it(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=2, per_hub=100, window_seconds=1))
    await guard.fail(ATTACKER, "hubA")
    await asyncio.sleep(1.2)
    await guard.fail(ATTACKER, "hubA")  # the first failure's window has ended
    await guard.admit(ATTACKER)


@on_loop
async def test_ssh_failures_spend_the_same_budget_without_a_hub(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=2, per_hub=100, window_seconds=60))
    await guard.fail(ATTACKER, None)
    await guard.fail(ATTACKER, "hubA")
    with pytest.raises(TooManyAttempts):
        await guard.fail(ATTACKER, None)
    assert [key async for key in redis.scan_iter(match="outpost:auth:fails-hub:*")] == [
        f"outpost:auth:fails-hub:{hub_bucket('hubA')}".encode()
    ]


@on_loop
async def test_redis_holds_only_hashes_and_few_keys_for_many_names(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=10**6, per_hub=10**6, window_seconds=60))
    names = [f"hub-{i}-" + "x" * 2000 for i in range(200)]
    for name in names:
        await guard.fail("evil\nsource " + "y" * 3000, name)
    await guard.admit(HOME)
    keys = [key.decode() for key in await redis.keys("outpost:auth:*")]
    assert len(keys) <= 1 + min(len(names), HUB_BUCKETS)
    assert all(len(key) < 64 for key in keys)
    stored = " ".join(keys)
    assert "evil" not in stored and "hub-" not in stored and HOME not in stored


def test_ids_are_fixed_size_and_buckets_bounded() -> None:
    assert len(source_id("1.2.3.4")) == len(source_id("x" * 10_000)) == 32
    assert source_id("a" * 5000 + "1") != source_id("a" * 5000 + "2")  # differ late, still apart
    assert {int(hub_bucket(f"hub{i}")) for i in range(5000)} <= set(range(HUB_BUCKETS))
    assert hub_bucket("\udcff") == hub_bucket("\udcff")  # a lone surrogate (latin-1 header) still hashes


def test_an_ipv6_source_is_its_64_and_a_mapped_ipv4_its_address() -> None:
    """One host picks any address of its /64; counted apart, each would bring a budget of its own."""
    assert source_id("2001:db8:1:2::1") == source_id("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert source_id("2001:db8:1:2::1") != source_id("2001:db8:1:3::1")
    assert source_id("::ffff:192.0.2.1") == source_id("192.0.2.1") != source_id("192.0.2.2")


class CountingReads(LoginCounters):
    """The real counters, counting the standing reads."""

    reads = 0

    async def blocked(self, source: str) -> bool:
        self.reads += 1
        return await super().blocked(source)


@on_loop
async def test_known_credentials_read_the_standing_once_a_second_a_new_guess_always(redis: aioredis.Redis) -> None:
    counts = CountingReads(redis)
    guard = LoginGuard(counts, LoginLimits(per_source=2, per_hub=100, window_seconds=30))
    for _ in range(50):  # a hub's polls with the header that proved itself: one read
        await guard.admit(HOME, known=True)
    assert counts.reads == 1
    for _ in range(3):  # credentials not proved before (a right guess): a read each
        await guard.admit(HOME)
    assert counts.reads == 4
    await outcomes(guard, HOME, "hubA", 2)  # its failures close it, and forget the cached standing
    with pytest.raises(TooManyAttempts):
        await guard.admit(HOME, known=True)
    with pytest.raises(TooManyAttempts):
        await guard.admit(HOME)

"""A server's address is published for the SSH daemon in the same step that marks it running, only if no
other live record holds it, and withdrawn in the same step that records its server gone."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from outpost.flavors import FlavorLimits
from outpost.models import Phase, ServiceId
from outpost.store import AddressOwner, Claim, Store
from outpost.store.keys import ADDRESSES, key_record

pytestmark = pytest.mark.asyncio


async def created(store: Store, name: str) -> ServiceId:
    sid = ServiceId("hubA", name, "1")
    done = await store.create(
        sid, user="alice", user_id="1", flavor=None, body={"name": name}, certs=None, limits=FlavorLimits()
    )
    assert done.ok
    return sid


async def phase_of(store: Store, sid: ServiceId) -> Phase | None:
    meta = await store.meta(sid)
    return meta.phase if meta else None


async def test_marking_running_publishes_the_address_and_forgetting_withdraws_it(store: Store) -> None:
    sid = await created(store, "lab")
    assert await store.mark_running(sid, "10.0.0.7:8888", "http://10.0.0.7:8888") == Claim(Phase.PENDING)
    assert await store.address_owner("10.0.0.7", 8888) == AddressOwner("hubA", "lab", "1", Phase.RUNNING)
    await store.forget(sid)
    assert await store.address_owner("10.0.0.7", 8888) is None


async def test_a_start_that_lost_to_a_stop_publishes_nothing(store: Store) -> None:
    sid = await created(store, "late")
    assert await store.transition(sid, Phase.STOPPING, (Phase.PENDING,)) == Phase.PENDING
    assert await store.mark_running(sid, "10.0.0.8:8888", "http://10.0.0.8:8888") == Claim(Phase.STOPPING)
    assert await store.address_owner("10.0.0.8", 8888) is None


async def test_of_many_records_claiming_one_address_at_once_exactly_one_wins(redis_url: str, store: Store) -> None:
    sids = [await created(store, f"claimant-{i}") for i in range(12)]
    clients = [aioredis.from_url(redis_url) for _ in sids]  # one connection each: the claims really race
    try:
        claims = await asyncio.gather(
            *(
                Store(c, store.crypt).mark_running(sid, "127.0.0.1:8888", "x")
                for c, sid in zip(clients, sids, strict=True)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    winners = [sid for sid, claim in zip(sids, claims, strict=True) if claim.holder is None]
    assert len(winners) == 1
    assert all(claim.holder in (None, winners[0]) for claim in claims)
    assert await store.address_owner("127.0.0.1", 8888) == AddressOwner("hubA", winners[0].name, "1", Phase.RUNNING)
    phases = [meta.phase for meta in await store.list_hub("hubA")]
    assert phases.count(Phase.RUNNING) == 1 and phases.count(Phase.PENDING) == len(sids) - 1


async def test_the_first_owner_keeps_its_address_until_its_server_is_seen_gone(store: Store) -> None:
    first, second = await created(store, "first"), await created(store, "second")
    assert await store.mark_running(first, "127.0.0.1:9000", "x") == Claim(Phase.PENDING)
    assert await store.mark_running(second, "127.0.0.1:9000", "y") == Claim(Phase.PENDING, holder=first)
    assert await phase_of(store, second) == Phase.PENDING  # nothing changed
    claim = await store.mark_running(second, "127.0.0.1:9000", "y", gone_holder=first)
    assert claim == Claim(Phase.PENDING)
    assert await store.address_owner("127.0.0.1", 9000) == AddressOwner("hubA", "second", "1", Phase.RUNNING)
    assert await phase_of(store, first) == Phase.RUNNING  # its record stays
    await store.forget(first)  # and its end takes nothing from the new owner
    assert await store.address_owner("127.0.0.1", 9000) == AddressOwner("hubA", "second", "1", Phase.RUNNING)


async def test_a_holder_seen_gone_does_not_excuse_another_live_holder(store: Store) -> None:
    first, second, third = [await created(store, name) for name in ("one", "two", "three")]
    await store.mark_running(first, "127.0.0.1:9001", "x")
    assert await store.mark_running(third, "127.0.0.1:9001", "z", gone_holder=second) == Claim(
        Phase.PENDING, holder=first
    )


@pytest.mark.parametrize("ended", [Phase.STOPPED, Phase.FAILED])
async def test_an_ended_or_forgotten_holder_holds_nothing(store: Store, redis: aioredis.Redis, ended: Phase) -> None:
    first, second, third = [await created(store, name) for name in ("one", "two", "three")]
    await store.mark_running(first, "127.0.0.1:9002", "x")
    await redis.hset(key_record(first), "phase", ended.value)  # as before a poll withdrew the address
    assert await store.mark_running(second, "127.0.0.1:9002", "y") == Claim(Phase.PENDING)
    await redis.delete(key_record(second))  # a record deleted without its index entry
    assert await store.mark_running(third, "127.0.0.1:9002", "z") == Claim(Phase.PENDING)


async def test_a_server_seen_gone_ends_its_record_and_withdraws_its_address_once(
    store: Store, redis: aioredis.Redis
) -> None:
    sid = await created(store, "lab")
    await store.mark_running(sid, "127.0.0.1:9003", "x")
    assert await store.mark_ended(sid, 137) is True
    meta = await store.meta(sid)
    assert meta is not None and (meta.phase, meta.exit_code, meta.address) == (Phase.FAILED, 137, "127.0.0.1:9003")
    assert await store.address_owner("127.0.0.1", 9003) is None
    before = await redis.hgetall(key_record(sid))
    assert await store.mark_ended(sid, 137) is False  # the next poll writes nothing
    assert await redis.hgetall(key_record(sid)) == before
    clean = await created(store, "clean")
    await store.mark_running(clean, "127.0.0.1:9004", "x")
    assert await store.mark_ended(clean, 0) is True
    assert await phase_of(store, clean) == Phase.STOPPED


async def test_ending_a_record_leaves_an_address_that_moved_on(store: Store) -> None:
    old, new = await created(store, "old"), await created(store, "new")
    await store.mark_running(old, "127.0.0.1:9005", "x")
    await store.mark_running(new, "127.0.0.1:9005", "y", gone_holder=old)
    assert await store.mark_ended(old, 1) is True
    assert await store.address_owner("127.0.0.1", 9005) == AddressOwner("hubA", "new", "1", Phase.RUNNING)


async def test_an_earlier_start_of_the_same_server_yields_its_address_and_no_one_else_does(store: Store) -> None:
    """The Kubernetes backend replaces the pod an earlier start of the same server left, under the same name."""
    earlier = ServiceId("hubA", "lab", "1")
    for sid, user in (
        (earlier, "alice"),
        (ServiceId("hubA", "lab", "2"), "alice"),
        (ServiceId("hubA", "lab", "3"), "bob"),
    ):
        done = await store.create(sid, user=user, user_id="1", flavor=None, body={}, certs=None, limits=FlavorLimits())
        assert done.ok
    await store.mark_running(earlier, "jupyter-lab.ns.svc:8888", "x")
    assert await store.mark_running(ServiceId("hubA", "lab", "3"), "jupyter-lab.ns.svc:8888", "y") == Claim(
        Phase.PENDING, holder=earlier
    )  # another user's server of the same name
    assert await store.mark_running(ServiceId("hubA", "lab", "2"), "jupyter-lab.ns.svc:8888", "z") == Claim(
        Phase.PENDING
    )
    assert await store.address_owner("jupyter-lab.ns.svc", 8888) == AddressOwner("hubA", "lab", "2", Phase.RUNNING)


async def test_a_start_without_an_address_is_running_and_indexes_nothing(store: Store, redis: aioredis.Redis) -> None:
    """An administrator's sanitize_start_response may answer "": the server posts its address itself."""
    sid = await created(store, "self-announcing")
    assert await store.mark_running(sid, "", "") == Claim(Phase.PENDING)
    assert await phase_of(store, sid) == Phase.RUNNING
    assert await redis.hgetall(ADDRESSES) == {}


async def test_a_tunnel_is_noted_on_a_live_record_only(store: Store, redis: aioredis.Redis) -> None:
    """`mark_tunnelled` sets the record's flag (kept by key rotation: a plain field); a record forgotten in the
    meantime gets no stray hash."""
    sid = await created(store, "lab")
    await store.mark_running(sid, "10.0.0.9:8888", "http://10.0.0.9:8888")
    meta = await store.meta(sid)
    assert meta is not None and not meta.tunnelled
    assert await store.mark_tunnelled(sid) and await store.mark_tunnelled(sid)
    meta = await store.meta(sid)
    assert meta is not None and meta.tunnelled
    await store.forget(sid)
    assert not await store.mark_tunnelled(sid)
    assert not await redis.exists(key_record(sid))


async def test_every_write_that_moves_an_address_or_its_owners_phase_publishes_the_address(store: Store) -> None:
    """What the SSH daemons' caches follow (`sshd.addresses`): None once subscribed, then each changed address,
    in order; a write that changes no owner publishes nothing."""
    changes = store.address_changes()
    assert await anext(changes) is None  # subscribed
    try:
        sid = await created(store, "lab")  # no address yet
        await store.mark_running(sid, "10.0.0.9:8888", "x")
        other = await created(store, "other")
        await store.mark_running(other, "10.0.0.9:8888", "x")  # refused: the address is held
        await store.transition(sid, Phase.STOPPING, (Phase.RUNNING,))
        await store.forget(sid)
        await store.forget(other)  # had no address
        running = await created(store, "ended")
        await store.mark_running(running, "10.0.0.10:8888", "x")
        sealed = await store.identity(running)
        await store.mark_ended(running, 1)
        await store.forget(running)  # its address was withdrawn already
        await store.adopt(ServiceId("hubA", "adopted", "1"), sealed, {})
        seen = [await asyncio.wait_for(anext(changes), 10) for _ in range(6)]
    finally:
        await changes.aclose()
    assert seen == ["10.0.0.9:8888"] * 3 + ["10.0.0.10:8888"] * 3

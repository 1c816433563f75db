"""The poll's read: five fields in one round trip, and concurrent polls sharing round trips."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.fernet import Fernet, MultiFernet
from redis.exceptions import ResponseError

from outpost.crypto import Crypt
from outpost.models import Phase, ServiceId
from outpost.store import Store
from outpost.store.keys import key_record

CLIENT_NAME = "outpost-poll-reads"
CRYPT = Crypt([Fernet.generate_key().decode()])


@pytest_asyncio.fixture
async def store(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[Store]:
    client = aioredis.from_url(redis_url, client_name=CLIENT_NAME)
    yield Store(client, CRYPT)
    await client.aclose()


async def connections(redis: aioredis.Redis) -> int:
    return len([c for c in await redis.client_list() if c.get("name") == CLIENT_NAME])


async def put(redis: aioredis.Redis, sid: ServiceId, pid: int, phase: Phase = Phase.RUNNING) -> None:
    await redis.hset(
        key_record(sid),
        mapping={"phase": phase.value, "exit_code": "", "state": CRYPT.encrypt_json({"pid": pid}), "body": "x"},
    )


@pytest.mark.asyncio
async def test_a_poll_reads_phase_observation_and_state(store: Store, redis: aioredis.Redis) -> None:
    sid = ServiceId("hubA", "srv", "1")
    await put(redis, sid, 41, Phase.STOPPED)
    await redis.hset(key_record(sid), mapping={"exit_code": "3", "observed": "7", "observed_at": "12.5"})
    view = await store.poll_record(sid)
    assert view is not None
    assert (view.phase, view.exit_code, view.observed_exit, view.observed_at, view.state) == (
        Phase.STOPPED,
        3,
        7,
        12.5,
        {"pid": 41},
    )
    assert await store.poll_record(ServiceId("hubA", "srv", "2")) is None


@pytest.mark.asyncio
async def test_concurrent_polls_share_round_trips_and_each_gets_its_own_record(
    store: Store, redis: aioredis.Redis
) -> None:
    sids = [ServiceId("hubA", f"srv-{i}", "1") for i in range(60)]
    for pid, sid in enumerate(sids):
        await put(redis, sid, pid)
    views = await asyncio.gather(
        *(store.poll_record(sid) for sid in sids), store.poll_record(ServiceId("hubB", "x", "1"))
    )
    assert [view.state for view in views[:-1] if view is not None] == [{"pid": pid} for pid in range(60)]
    assert views[-1] is None
    # One read at a time is on the wire; 61 reads one connection each would open 61.
    assert await connections(redis) <= 2


@pytest.mark.asyncio
async def test_a_failed_read_in_a_batch_fails_only_its_own_poll(store: Store, redis: aioredis.Redis) -> None:
    sids = [ServiceId("hubA", f"srv-{i}", "1") for i in range(10)]
    for pid, sid in enumerate(sids):
        await put(redis, sid, pid)
    broken = ServiceId("hubA", "not-a-hash", "1")
    await redis.set(key_record(broken), "a string, not a record")
    results = await asyncio.gather(
        *(store.poll_record(sid) for sid in [*sids[:5], broken, *sids[5:]]), return_exceptions=True
    )
    assert isinstance(results[5], ResponseError)
    fine = [r for i, r in enumerate(results) if i != 5]
    assert [getattr(view, "state", None) for view in fine] == [{"pid": pid} for pid in range(10)]
    assert (await store.poll_record(sids[0])) is not None  # the batcher is usable afterwards


@pytest.mark.asyncio
async def test_repeated_polls_decrypt_a_state_once_and_see_a_new_state_at_once(
    store: Store, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = ServiceId("hubA", "cached", "1")
    await put(redis, sid, 41)
    decrypted: list[bytes | str] = []
    real = MultiFernet.decrypt

    def counting(self: MultiFernet, token: bytes | str, ttl: int | None = None) -> bytes:
        decrypted.append(token)
        return real(self, token, ttl)

    monkeypatch.setattr(MultiFernet, "decrypt", counting)
    first = await store.poll_record(sid)
    assert first is not None and first.state == {"pid": 41}
    first.state["pid"] = 0  # whatever a caller does with its copy
    second = await store.poll_record(sid)
    assert second is not None and second.state == {"pid": 41}
    assert len(decrypted) == 1
    await put(redis, sid, 42)  # a restart stores a new token
    third = await store.poll_record(sid)
    assert third is not None and third.state == {"pid": 42}
    assert len(decrypted) == 2

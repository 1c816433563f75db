"""A server's address is published for the SSH daemon in the same step that marks it running."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from outpost.crypto import Crypt
from outpost.flavors import Limits
from outpost.models import Phase, ServiceId
from outpost.store import AddressOwner, Store

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def store(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[Store]:
    client = aioredis.from_url(redis_url)
    yield Store(client, Crypt([Fernet.generate_key().decode()]))
    await client.aclose()


async def created(store: Store, name: str) -> ServiceId:
    sid = ServiceId("hubA", name, "1")
    done = await store.create(
        sid, user="alice", user_id="1", flavor=None, body={"name": name}, certs=None, limits=Limits()
    )
    assert done.ok
    return sid


async def test_marking_running_publishes_the_address_and_forgetting_withdraws_it(store: Store) -> None:
    sid = await created(store, "lab")
    assert await store.mark_running(sid, "10.0.0.7:8888", "http://10.0.0.7:8888") == Phase.PENDING
    assert await store.address_owner("10.0.0.7", 8888) == AddressOwner("hubA", "lab", "1", Phase.RUNNING)
    await store.forget(sid)
    assert await store.address_owner("10.0.0.7", 8888) is None


async def test_a_start_that_lost_to_a_stop_publishes_nothing(store: Store) -> None:
    sid = await created(store, "late")
    assert await store.transition(sid, Phase.STOPPING, (Phase.PENDING,)) == Phase.PENDING
    assert await store.mark_running(sid, "10.0.0.8:8888", "http://10.0.0.8:8888") == Phase.STOPPING
    assert await store.address_owner("10.0.0.8", 8888) is None

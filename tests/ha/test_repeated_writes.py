"""The client repeats a command whose connection failed, and the first attempt may have run: every store write
answers a repetition as its first run did. Without replicas required, nothing more is sent (no WAIT)."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from outpost import store as store_module
from outpost.crypto import Crypt
from outpost.errors import ConfigurationError
from outpost.flavors import FlavorLimits
from outpost.models import Phase, ServiceId
from outpost.settings import load_settings
from outpost.store import Store
from tests.conftest import basic, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
SID = ServiceId("hubA", "srv", "1")
NO_LIMITS = FlavorLimits(flavor_max=-1, per_user_max=-1, user_total_max=-1)


def _store(redis: aioredis.Redis) -> Store:
    return Store(redis, Crypt([Fernet.generate_key().decode()]))


async def _create(store: Store) -> str:
    created = await store.create(SID, user="alice", user_id="7", flavor=None, body={}, certs=None, limits=NO_LIMITS)
    return "ok" if created.ok else created.refusal


async def test_a_repeated_create_or_transition_answers_as_its_first_run(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(redis)
    monkeypatch.setattr(store_module, "write_id", lambda: "one-write")
    assert [await _create(store), await _create(store)] == ["ok", "ok"]
    assert await store.usage("hubA", "alice", "") == (1, 1, 1)  # one slot, not two
    first = await store.transition(SID, Phase.STARTING, (Phase.PENDING,))
    assert [first, await store.transition(SID, Phase.STARTING, (Phase.PENDING,))] == [Phase.PENDING] * 2
    assert await store.once("event-1") and await store.once("event-1")

    monkeypatch.setattr(store_module, "write_id", lambda: "another-write")
    assert await _create(store) == "exists"
    assert await store.transition(SID, Phase.STARTING, (Phase.PENDING,)) == Phase.STARTING
    assert not await store.once("event-1")


async def test_without_min_replicas_no_wait_is_sent(api: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    await redis.config_resetstat()
    assert (await api.post("/services", json=start_body(), headers=basic("hubA"))).status_code == 200
    assert (await api.delete("/services/srv/1", headers=basic("hubA"))).status_code == 200
    commands = await redis.info("commandstats")
    assert "cmdstat_evalsha" in commands and "cmdstat_wait" not in commands


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"redis_sentinels": "10.0.0.1:26379"}, "OUTPOST_REDIS_SENTINEL_MASTER"),
        ({"redis_sentinels": "10.0.0.1", "redis_sentinel_master": "m"}, "is not host:port"),
        ({"redis_sentinels": "a:1,b:99999", "redis_sentinel_master": "m"}, "'b:99999' is not host:port"),
        ({"redis_min_replicas": -1}, "redis_min_replicas"),
    ],
)
async def test_bad_sentinel_settings_are_refused_with_the_reason(values: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        load_settings(crypt_key=Fernet.generate_key().decode(), **values)


async def test_sentinel_addresses_take_names_and_ipv6() -> None:
    settings = load_settings(
        crypt_key=Fernet.generate_key().decode(),
        redis_sentinels="s0.redis:26379, [fd00::1]:26380",
        redis_sentinel_master="outpost",
    )
    assert settings.sentinel_addresses() == [("s0.redis", 26379), ("fd00::1", 26380)]

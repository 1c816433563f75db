"""Key rotation (`outpost.rotation`): under traffic nothing is lost, no old-key token is left, a run resumes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from outpost import rotation
from outpost.crypto import Crypt
from outpost.flavors import FlavorLimits
from outpost.models import ServiceId
from outpost.runtime import build_runtime, get_runtime
from outpost.settings import Settings
from outpost.store import Store
from outpost.store.keys import key_certs
from outpost.store.records import ENCRYPTED_FIELDS

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def seed(store: Store, count: int, hub: str = "hubA") -> list[ServiceId]:
    ids = [ServiceId(hub, f"srv{i}", "1") for i in range(count)]
    for sid in ids:
        body = {"env": {"JUPYTERHUB_API_TOKEN": f"token-{sid.name}"}}
        created = await store.create(
            sid, user="alice", user_id="1", flavor=None, body=body, certs=None, limits=FlavorLimits()
        )
        assert created.ok
        await store.save_backend_state(sid, {"pid": 1})
    return ids


async def test_rotation_under_traffic_loses_nothing_and_leaves_no_old_key_tokens(
    make_settings: Callable[..., Settings], redis: aioredis.Redis
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old = make_settings(crypt_key=old_key)
    runtime = await get_runtime()
    ids = await seed(runtime.store, 300)
    rotating = build_runtime(old.model_copy(update={"crypt_key": old.crypt_key.__class__(f"{new_key},{old_key}")}))

    async def traffic() -> None:  # the functions keep writing with the old configuration meanwhile
        for sid in ids[::10]:
            await runtime.store.save_backend_state(sid, {"pid": 2})

    checked, _ = await asyncio.gather(rotation.rotate_keys(rotating.store, lambda _: None), traffic())
    assert checked > 0
    # Run again: writes made during the first run with the old key are picked up; a run resumes.
    await rotation.rotate_keys(rotating.store, lambda _: None)
    assert await rotation.rotate_keys(rotating.store, lambda _: None) == 0

    only_new = Crypt([new_key])
    for sid in ids:
        key = f"outpost:hub:hubA:svc:{sid.name}:1"
        for field in ENCRYPTED_FIELDS:
            token = await redis.hget(key, field)
            if token:
                assert only_new.readable_by_first_key(token)
        body = only_new.decrypt_json(await redis.hget(key, "body"))
        assert body["env"]["JUPYTERHUB_API_TOKEN"] == f"token-{sid.name}"
        assert only_new.decrypt_json(await redis.hget(key, "state"))["pid"] in (1, 2)
    await rotating.aclose()


async def test_pending_certs_are_rotated_and_keep_their_expiry(
    make_settings: Callable[..., Settings], redis: aioredis.Redis
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old = make_settings(crypt_key=old_key)
    store = (await get_runtime()).store
    sid = ServiceId("hubA", "certs", "1")
    created = await store.create(
        sid, user="alice", user_id="1", flavor=None, body={}, certs={"certs": {"k": "v"}}, limits=FlavorLimits()
    )
    assert created.ok
    ttl = await redis.ttl(key_certs(sid))
    rotating = build_runtime(old.model_copy(update={"crypt_key": old.crypt_key.__class__(f"{new_key},{old_key}")}))
    assert await rotation.rotate_keys(rotating.store, lambda _: None) == 2  # the body and the certs
    assert Crypt([new_key]).decrypt_json(await redis.get(key_certs(sid))) == {"certs": {"k": "v"}}
    assert 0 < await redis.ttl(key_certs(sid)) <= ttl
    assert await rotating.store.take_certs(sid) == {"certs": {"k": "v"}}
    await rotating.aclose()

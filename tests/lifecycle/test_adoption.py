"""No server lost to lost state: a running server whose record Redis lost is re-adopted from the identity
its backend keeps sealed with it, unless the hub (or the outpost) stopped it since."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from outpost.crypto import Crypt
from outpost.lifecycle.reconcile import reconcile
from outpost.runtime import get_runtime
from outpost.settings import Settings
from tests.conftest import basic, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")


async def _running(settings: Settings) -> set[str]:
    runtime = await get_runtime()
    return {sid.name for sid, _ in await runtime.backend.running()}


async def test_a_lost_record_is_rebuilt_by_the_reconciler_and_the_server_kept(
    api: httpx.AsyncClient, redis: aioredis.Redis, settings: Settings
) -> None:
    started = await api.post("/services", json=start_body(name="kept", user="bob"), headers=A)
    assert started.status_code == 200
    [before] = (await api.get("/services", headers=A)).json()
    await redis.flushall()  # Redis came back without its data
    runtime = await get_runtime()
    assert await reconcile(runtime) == (0, 0, 1)
    assert await _running(settings) == {"kept"}
    assert (await api.get("/services/kept/1", headers=A)).json() == {"status": None}
    [after] = (await api.get("/services", headers=A)).json()
    assert {**after, "last_update": ""} == {**before, "last_update": ""}
    assert await runtime.store.usage("hubA", "bob", "") == (1, 1, 1)  # its slot is taken again
    host, port = started.json()["service"].split("://")[1].rsplit(":", 1)
    owner = await runtime.store.address_owner(host, int(port))  # the SSH daemon reaches it again
    assert owner is not None and owner.name == "kept"
    assert (await api.delete("/services/kept/1", headers=A)).status_code == 200
    assert await _running(settings) == set()
    assert await runtime.store.usage("hubA", "bob", "") == (0, 0, 0)
    assert await reconcile(runtime) == (0, 0, 0)  # a stopped server is not brought back


async def test_a_poll_that_finds_no_record_re_adopts_before_answering(
    api: httpx.AsyncClient, redis: aioredis.Redis, settings: Settings
) -> None:
    assert (await api.post("/services", json=start_body(name="kept"), headers=A)).status_code == 200
    await redis.flushall()
    # The hub takes a 404 for "stopped" and would stop the server: the poll adopts it first.
    assert (await api.get("/services/kept/1", headers=A)).json() == {"status": None}
    assert (await api.get("/services/other/1", headers=A)).status_code == 404
    assert (await api.delete("/services/kept/1", headers=A)).status_code == 200
    assert await _running(settings) == set()


async def test_a_server_the_hub_stopped_meanwhile_is_not_adopted_but_stopped(
    api: httpx.AsyncClient, redis: aioredis.Redis, settings: Settings
) -> None:
    for name in ("kept", "stopped"):
        assert (await api.post("/services", json=start_body(name=name), headers=A)).status_code == 200
    await redis.flushall()
    # The hub stops a service the outpost no longer knows: 404, and a tombstone.
    assert (await api.delete("/services/stopped/1", headers=A)).status_code == 404
    assert (await api.get("/services/stopped/1", headers=A)).status_code == 404
    assert await reconcile(await get_runtime()) == (0, 1, 1)
    assert await _running(settings) == {"kept"}
    assert [s["name"] for s in (await api.get("/services", headers=A)).json()] == ["kept"]
    assert (await api.delete("/services/kept/1", headers=A)).status_code == 200


async def test_the_identity_is_sealed_and_one_the_keys_cannot_read_is_not_adopted(
    api: httpx.AsyncClient, redis: aioredis.Redis, settings: Settings
) -> None:
    body = start_body(name="kept")
    assert (await api.post("/services", json=body, headers=A)).status_code == 200
    runtime = await get_runtime()
    [(_, state)] = await runtime.backend.running()
    identity = Path(state["dir"]) / "identity.sealed"
    assert identity.stat().st_mode & 0o777 == 0o600
    sealed = identity.read_text()
    assert body["env"]["JUPYTERHUB_API_TOKEN"] not in sealed and "alice" not in sealed
    assert Crypt(settings.crypt_keys()).decrypt_json(sealed)["body"]["env"] == body["env"]
    identity.write_text(Crypt([Fernet.generate_key().decode()]).encrypt_json({"user": "mallory"}).decode())
    await redis.flushall()
    assert (await api.get("/services/kept/1", headers=A)).status_code == 404
    assert await reconcile(runtime) == (0, 1, 0)
    assert await _running(settings) == set()


async def test_another_hub_can_neither_tombstone_nor_adopt_a_hubs_lost_server(
    api: httpx.AsyncClient, redis: aioredis.Redis, settings: Settings
) -> None:
    assert (await api.post("/services", json=start_body(name="kept"), headers=A)).status_code == 200
    await redis.flushall()
    other = basic("hubB")
    assert (await api.get("/services/kept/1", headers=other)).status_code == 404  # not hubB's to adopt
    assert (await api.delete("/services/kept/1", headers=other)).status_code == 404  # hubB's tombstone only
    assert await reconcile(await get_runtime()) == (0, 0, 1)
    assert (await api.get("/services", headers=other)).json() == []
    assert (await api.get("/services/kept/1", headers=A)).json() == {"status": None}
    assert (await api.delete("/services/kept/1", headers=A)).status_code == 200
    assert await _running(settings) == set()

"""Re-adoption on Kubernetes (kmock's emulator, a real Redis): a pod whose record Redis lost is re-adopted
from the identity its Secret keeps, unless the hub stopped it since; the hub can stop it afterwards."""

from __future__ import annotations

import base64

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from outpost.crypto import Crypt
from outpost.lifecycle.reconcile import reconcile
from outpost.runtime import Runtime
from tests.backends.kubernetes.conftest import NAMESPACE, ApiServer, Kubelet
from tests.conftest import basic
from tests.lifecycle.test_pod_status import hub_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")


def pods(apiserver: ApiServer) -> list[str]:
    return sorted(name for _, name in apiserver.live("pods"))


def secrets(apiserver: ApiServer) -> list[str]:
    return sorted(name for _, name in apiserver.live("secrets"))


async def start(stack: httpx.AsyncClient, name: str) -> None:
    response = await stack.post("/services", json=hub_body(name=name), headers=A)
    assert response.status_code == 200, response.text


async def test_a_lost_record_is_re_adopted_by_the_reconciler_and_the_hub_can_stop_it(
    stack: httpx.AsyncClient, runtime: Runtime, redis: aioredis.Redis, apiserver: ApiServer, kubelet: Kubelet
) -> None:
    await start(stack, "kept")
    assert secrets(apiserver) == ["jupyter-alice--kept", "jupyter-alice--kept-identity"]
    [before] = (await stack.get("/services", headers=A)).json()
    await redis.flushall()  # Redis came back without its data
    assert await reconcile(runtime) == (0, 0, 1)
    assert pods(apiserver) == ["jupyter-alice--kept"]
    assert (await stack.get("/services/kept/1", headers=A)).json() == {"status": None}
    [after] = (await stack.get("/services", headers=A)).json()
    assert {**after, "last_update": ""} == {**before, "last_update": ""}
    assert await runtime.store.usage("hubA", "alice", "") == (1, 1, 1)  # its slot is taken again
    assert (await stack.delete("/services/kept/1", headers=A)).status_code == 200
    assert pods(apiserver) == [] and secrets(apiserver) == []  # the identity goes with the stop
    assert await reconcile(runtime) == (0, 0, 0)


async def test_a_poll_that_finds_no_record_re_adopts_before_answering(
    stack: httpx.AsyncClient, runtime: Runtime, redis: aioredis.Redis, apiserver: ApiServer, kubelet: Kubelet
) -> None:
    await start(stack, "kept")
    await redis.flushall()
    # The hub takes a 404 for "stopped" and would stop the server: the poll adopts it first.
    assert (await stack.get("/services/kept/1", headers=A)).json() == {"status": None}
    assert (await stack.get("/services/other/1", headers=A)).status_code == 404
    assert (await stack.delete("/services/kept/1", headers=A)).status_code == 200
    assert pods(apiserver) == [] and secrets(apiserver) == []


async def test_a_pod_the_hub_stopped_meanwhile_is_not_adopted_but_stopped(
    stack: httpx.AsyncClient, runtime: Runtime, redis: aioredis.Redis, apiserver: ApiServer, kubelet: Kubelet
) -> None:
    for name in ("kept", "stopped"):
        await start(stack, name)
    await redis.flushall()
    # The hub stops a service the outpost no longer knows: 404, and a tombstone.
    assert (await stack.delete("/services/stopped/1", headers=A)).status_code == 404
    assert (await stack.get("/services/stopped/1", headers=A)).status_code == 404
    assert pods(apiserver) == ["jupyter-alice--kept", "jupyter-alice--stopped"]
    assert await reconcile(runtime) == (0, 1, 1)
    assert pods(apiserver) == ["jupyter-alice--kept"]
    assert secrets(apiserver) == ["jupyter-alice--kept", "jupyter-alice--kept-identity"]
    assert [s["name"] for s in (await stack.get("/services", headers=A)).json()] == ["kept"]
    assert (await stack.delete("/services/kept/1", headers=A)).status_code == 200


async def test_another_hub_can_neither_tombstone_nor_adopt_a_hubs_lost_pod(
    stack: httpx.AsyncClient, runtime: Runtime, redis: aioredis.Redis, apiserver: ApiServer, kubelet: Kubelet
) -> None:
    await start(stack, "kept")
    await redis.flushall()
    other = basic("hubB")
    assert (await stack.get("/services/kept/1", headers=other)).status_code == 404  # not hubB's to adopt
    assert (await stack.delete("/services/kept/1", headers=other)).status_code == 404  # hubB's tombstone only
    assert await reconcile(runtime) == (0, 0, 1)
    assert (await stack.get("/services", headers=other)).json() == []
    assert (await stack.get("/services/kept/1", headers=A)).json() == {"status": None}
    assert (await stack.delete("/services/kept/1", headers=A)).status_code == 200
    assert pods(apiserver) == []


async def test_an_identity_the_keys_cannot_read_is_not_adopted(
    stack: httpx.AsyncClient, runtime: Runtime, redis: aioredis.Redis, apiserver: ApiServer, kubelet: Kubelet
) -> None:
    body = hub_body(name="kept")
    assert (await stack.post("/services", json=body, headers=A)).status_code == 200
    secret = apiserver.live("secrets")[NAMESPACE, "jupyter-alice--kept-identity"]
    sealed = base64.b64decode(secret["data"]["identity.sealed"]).decode()
    assert body["env"]["JUPYTERHUB_API_TOKEN"] not in sealed and "alice" not in sealed  # sealed, not plain
    assert runtime.store.crypt.decrypt_json(sealed)["body"]["env"] == body["env"]
    forged = Crypt([Fernet.generate_key().decode()]).encrypt_json({"user": "mallory"})
    secret["data"] = {"identity.sealed": base64.b64encode(forged).decode()}
    apiserver.objects["v1/secrets", NAMESPACE, "jupyter-alice--kept-identity"] = secret
    await redis.flushall()
    assert (await stack.get("/services/kept/1", headers=A)).status_code == 404
    assert await reconcile(runtime) == (0, 1, 0)
    assert pods(apiserver) == [] and secrets(apiserver) == []

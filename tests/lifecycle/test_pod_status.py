"""Pod events and the resync write service status into Redis (real Redis, servers started through the
real start function on kmock's emulator); cached_poll reads it without touching the Kubernetes API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import kmock
import pytest
import redis.asyncio as aioredis
from cloudevents.http import CloudEvent

from outpost.errors import InvalidEvent
from outpost.lifecycle import pod_status
from outpost.models import ServiceId, ServiceMeta
from outpost.runtime import Runtime, get_runtime
from outpost.settings import Settings
from outpost.store.keys import key_record
from tests.backends.kubernetes.conftest import NAMESPACE, ApiServer, Kubelet, exited_status
from tests.conftest import basic, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")
POD = "jupyter-alice--srv"
SID = ServiceId("hubA", "srv", "1")
# What the OutpostSpawner sends by default (its custom_misc).
MISC = {
    "dns_name_template": "{name}.{namespace}.svc.cluster.local",
    "pod_name_template": "jupyter-{username}--{servername}",
    "internal_ssl": False, "port": 8888, "ip": "0.0.0.0", "services_enabled": True, "extra_labels": {},
}  # fmt: skip


def hub_body(**fields: Any) -> dict[str, Any]:
    return start_body(misc=dict(MISC), **fields)


def pod_event(name: str = POD, namespace: str = NAMESPACE, kind: str = "Pod", data: Any = None) -> CloudEvent:
    """What a Knative ApiServerSource sends in Reference mode (or, with `data`, in Resource mode)."""
    attributes = {"type": "dev.knative.apiserver.ref.update", "source": "https://10.96.0.1:443",
                  "id": str(uuid.uuid4()), "kind": kind, "name": name, "namespace": namespace}  # fmt: skip
    reference = {"apiVersion": "v1", "kind": kind, "name": name, "namespace": namespace}
    return CloudEvent(attributes, reference if data is None else data)


def pod_reads(server: ApiServer) -> int:
    return len([r for r in server.requests if r.action == kmock.action.FETCH and r.subresource is None])


async def meta(runtime: Runtime, sid: ServiceId = SID) -> ServiceMeta:
    found = await runtime.store.meta(sid)
    assert found is not None
    return found


async def test_events_record_the_pods_status(
    stack: httpx.AsyncClient, runtime: Runtime, apiserver: ApiServer, kubelet: Kubelet
) -> None:
    response = await stack.post("/services", json=hub_body(), headers=A)
    assert response.status_code == 200, response.text
    assert response.json() == {"service": f"http://{POD}.{NAMESPACE}.svc.cluster.local:8888"}
    assert (await meta(runtime)).observed_at == 0  # nothing seen yet

    before = time.time()
    await pod_status.handle_pod_event(runtime, pod_event())
    running = await meta(runtime)
    assert running.observed_exit is None and before <= running.observed_at <= time.time()

    await kubelet.set_status(NAMESPACE, POD, exited_status(0, "Completed"))
    await pod_status.handle_pod_event(runtime, pod_event())
    exited = await meta(runtime)
    assert exited.observed_exit == 0 and exited.observed_at >= running.observed_at

    await pod_status.handle_pod_event(runtime, pod_event())  # delivered again: same answer
    again = await meta(runtime)
    assert again.observed_exit == 0 and again.observed_at >= exited.observed_at


async def test_events_about_other_pods_are_ignored(
    stack: httpx.AsyncClient, runtime: Runtime, apiserver: ApiServer, kubelet: Kubelet, redis: aioredis.Redis
) -> None:
    assert (await stack.post("/services", json=hub_body(), headers=A)).status_code == 200
    # Not ours (no labels), ours but without a record, not a pod, a pod that does not exist.
    apiserver.objects["v1/pods", NAMESPACE, "other"] = {"metadata": {"name": "other", "namespace": NAMESPACE}}
    stranger = dict(apiserver.live("pods")[NAMESPACE, POD])
    stranger["metadata"] = {
        **stranger["metadata"],
        "name": "stranger",
        "annotations": {**stranger["metadata"]["annotations"], "outpost.jupyter.org/start-id": "9"},
    }
    apiserver.objects["v1/pods", NAMESPACE, "stranger"] = stranger  # fmt: skip
    keys_before = sorted(await redis.keys("*"))
    for event in (pod_event("other"), pod_event("stranger"), pod_event(kind="Service"), pod_event("nowhere")):
        await pod_status.handle_pod_event(runtime, event)
    assert sorted(await redis.keys("*")) == keys_before
    assert (await meta(runtime)).observed_at == 0
    assert await runtime.store.meta(ServiceId("hubA", "srv", "9")) is None


async def test_a_deleted_pod_is_recorded_only_when_the_event_carries_it(
    stack: httpx.AsyncClient, runtime: Runtime, apiserver: ApiServer
) -> None:
    assert (await stack.post("/services", json=hub_body(), headers=A)).status_code == 200
    last_seen = dict(apiserver.live("pods")[NAMESPACE, POD])
    response = await apiserver.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}")  # deleted from outside
    assert response.status == 200
    await pod_status.handle_pod_event(runtime, pod_event())  # Reference mode: whose pod was that?
    assert (await meta(runtime)).observed_at == 0
    await pod_status.handle_pod_event(runtime, pod_event(data=last_seen))  # Resource mode: the object
    assert (await meta(runtime)).observed_exit == 1


@pytest.mark.parametrize("data", [["a list"], {"kind": "Pod", "name": "x"}, {"kind": "Pod", "namespace": "ns"}])
async def test_malformed_events_are_refused(runtime: Runtime, data: Any) -> None:
    event = CloudEvent({"type": "dev.knative.apiserver.ref.update", "source": "s", "id": "1"}, data)
    with pytest.raises(InvalidEvent):
        await pod_status.handle_pod_event(runtime, event)


async def test_cached_poll_uses_fresh_observations_only(
    stack: httpx.AsyncClient, runtime: Runtime, apiserver: ApiServer, kubelet: Kubelet, redis: aioredis.Redis
) -> None:
    assert (await stack.post("/services", json=hub_body(), headers=A)).status_code == 200
    _, state = await runtime.store.meta_and_state(SID) or (None, None)
    assert state is not None
    await pod_status.handle_pod_event(runtime, pod_event())
    await kubelet.set_status(NAMESPACE, POD, exited_status(5))  # an event that has not arrived yet

    reads = pod_reads(apiserver)
    assert await pod_status.cached_poll(runtime, await meta(runtime), state) is None  # what was seen
    assert pod_reads(apiserver) == reads  # without asking Kubernetes

    stale = time.time() - pod_status.fresh_seconds(runtime) - 1
    await redis.hset(key_record(SID), "observed_at", repr(stale))
    assert await pod_status.cached_poll(runtime, await meta(runtime), state) == 5  # read from the pod
    assert pod_reads(apiserver) == reads + 1


async def test_resync_repairs_missed_events(
    stack: httpx.AsyncClient, runtime: Runtime, apiserver: ApiServer, kubelet: Kubelet, redis: aioredis.Redis
) -> None:
    for name in ("one", "two", "three"):
        assert (await stack.post("/services", json=hub_body(name=name), headers=A)).status_code == 200
    await kubelet.set_status(NAMESPACE, "jupyter-alice--two", exited_status(4))
    response = await apiserver.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/jupyter-alice--three")
    assert response.status == 200
    # Records that turned RUNNING a moment ago may be missing from the listing: not judged yet.
    assert await pod_status.resync(runtime) == 2
    assert (await meta(runtime, ServiceId("hubA", "three", "1"))).observed_at == 0

    old = "2020-01-01T00:00:00+00:00"
    for name in ("one", "two", "three"):
        await redis.hset(key_record(ServiceId("hubA", name, "1")), "last_update", old)
    lists = len(apiserver.requests_to(kmock.action.LIST, "pods"))
    assert await pod_status.resync(runtime) == 3
    assert len(apiserver.requests_to(kmock.action.LIST, "pods")) == lists + 1  # one listing per namespace
    names = ("one", "two", "three")
    observed = {name: (await meta(runtime, ServiceId("hubA", name, "1"))).observed_exit for name in names}
    assert observed == {"one": None, "two": 4, "three": 1}

    async with runtime.store.exclusively("resync", 5) as mine:  # another tick is at it
        assert mine
        assert await pod_status.resync(runtime) == 0


async def test_nothing_to_do_for_other_backends(make_settings: Callable[..., Settings]) -> None:
    make_settings()
    runtime = await get_runtime()  # the local backend
    await pod_status.handle_pod_event(runtime, pod_event())
    assert await pod_status.resync(runtime) == 0

"""The status cache end to end: the start, poll and pod-status functions through functions-framework's
loader, Redis, and kmock's emulator. A poll answers from Redis while pod events keep it fresh."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cloudevents.conversion import to_binary
from functions_framework.aio import create_asgi_app

from outpost.lifecycle import pod_status
from outpost.models import ServiceId
from outpost.runtime import Runtime
from outpost.store.keys import key_record
from tests.backends.kubernetes.conftest import NAMESPACE, ApiServer, Kubelet, exited_status
from tests.conftest import basic
from tests.lifecycle.test_pod_status import POD, hub_body, pod_event, pod_reads

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")
POD_STATUS_SOURCE = Path(__file__).resolve().parents[2] / "functions" / "pod_status" / "main.py"


@pytest.fixture(scope="session")
def pod_status_app() -> Any:
    """The ApiServerSource's sink: `pod_status_event`, the pod-status function."""
    return create_asgi_app(target="pod_status_event", source=str(POD_STATUS_SOURCE))


@pytest_asyncio.fixture
async def events(pod_status_app: Any, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pod_status_app), base_url="http://events") as c:
        yield c


async def deliver(events: httpx.AsyncClient) -> None:
    headers, body = to_binary(pod_event())
    response = await events.post("/", headers=headers, content=body)
    assert response.status_code == 202 and response.content == b""  # acknowledged, empty body


async def test_polls_answer_from_redis_while_events_keep_it_fresh(
    stack: httpx.AsyncClient, events: httpx.AsyncClient, runtime: Runtime, apiserver: ApiServer, kubelet: Kubelet
) -> None:
    assert (await stack.post("/services", json=hub_body(), headers=A)).status_code == 200

    reads = pod_reads(apiserver)
    assert (await stack.get("/services/srv/1", headers=A)).json() == {"status": None}
    assert pod_reads(apiserver) == reads + 1  # nothing seen yet: the pod is read

    await deliver(events)
    reads = pod_reads(apiserver)
    for _ in range(5):
        assert (await stack.get("/services/srv/1", headers=A)).json() == {"status": None}
    assert pod_reads(apiserver) == reads  # five polls, no Kubernetes call

    await kubelet.set_status(NAMESPACE, POD, exited_status(3))
    await deliver(events)
    reads = pod_reads(apiserver)
    assert (await stack.get("/services/srv/1", headers=A)).json() == {"status": 3}
    assert pod_reads(apiserver) == reads


async def test_a_stale_status_falls_back_to_the_pod(
    stack: httpx.AsyncClient,
    events: httpx.AsyncClient,
    runtime: Runtime,
    apiserver: ApiServer,
    kubelet: Kubelet,
    redis: aioredis.Redis,
) -> None:
    assert (await stack.post("/services", json=hub_body(), headers=A)).status_code == 200
    await deliver(events)
    await kubelet.set_status(NAMESPACE, POD, exited_status(7))  # and that event is lost
    stale = time.time() - pod_status.fresh_seconds(runtime) - 1
    await redis.hset(key_record(ServiceId("hubA", "srv", "1")), "observed_at", repr(stale))
    reads = pod_reads(apiserver)
    assert (await stack.get("/services/srv/1", headers=A)).json() == {"status": 7}
    assert pod_reads(apiserver) == reads + 1

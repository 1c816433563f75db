"""The timer deployable (functions/timer): the PingSource's tick is answered with an empty 202, and runs the tick."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from functions_framework.aio import create_asgi_app

from outpost.cli.devserver import functions_dir
from outpost.flavors import FlavorLimits
from outpost.models import ServiceId
from outpost.runtime import get_runtime
from outpost.settings import Settings
from tests.conftest import start_body

pytestmark = pytest.mark.asyncio
SID = ServiceId("hubA", "srv", "1")


@pytest_asyncio.fixture
async def timer(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_asgi_app(target="poll_timer_event", source=str(functions_dir() / "timer" / "main.py"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://timer") as client:
        yield client


def tick() -> tuple[dict[str, str], bytes]:
    event = CloudEvent({"type": "dev.knative.sources.ping", "source": "/apis/v1/namespaces/outpost/pingsources/tick"})
    event.data = {"task": "tick"}
    return to_structured(event)


async def test_a_tick_stops_a_service_past_its_runtime_limit(timer: httpx.AsyncClient) -> None:
    runtime = await get_runtime()
    created = await runtime.store.create(
        SID,
        user="alice",
        user_id="7",
        flavor=None,
        body=start_body(),
        certs=None,
        limits=FlavorLimits(),
        runtime_seconds=1,
    )
    assert created.ok
    headers, body = tick()
    answer = await timer.post("/", headers=headers, content=body)
    assert (answer.status_code, answer.content) == (202, b"")
    assert await runtime.store.meta(SID) is not None  # within its limit: kept

    await asyncio.sleep(1.1)
    answer = await timer.post("/", headers=headers, content=body)
    assert (answer.status_code, answer.content) == (202, b"")
    assert await runtime.store.meta(SID) is None


async def test_what_is_not_a_cloudevent_is_refused_without_redelivery(timer: httpx.AsyncClient) -> None:
    answer = await timer.post("/", content=b"{}")
    assert answer.status_code == 400

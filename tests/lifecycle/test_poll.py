"""Polling, as a use case with plain arguments: the status and, only when asked, the logs."""

from __future__ import annotations

import pytest

from outpost import errors
from outpost.flavors import FlavorLimits
from outpost.lifecycle.poll import Polled, poll
from outpost.models import ServiceId
from outpost.runtime import get_runtime
from outpost.settings import Settings
from tests.conftest import start_body

pytestmark = pytest.mark.asyncio
SID = ServiceId("hubA", "srv", "1")


async def test_an_unknown_service_is_an_error(settings: Settings) -> None:
    with pytest.raises(errors.UnknownService):
        await poll(await get_runtime(), SID, collect_logs=False)


async def test_a_pending_start_runs_and_logs_come_only_when_asked(settings: Settings) -> None:
    runtime = await get_runtime()
    created = await runtime.store.create(
        SID, user="alice", user_id="7", flavor=None, body=start_body(), certs=None, limits=FlavorLimits()
    )
    assert created.ok
    assert await poll(runtime, SID, collect_logs=False) == Polled(None, None)
    assert await poll(runtime, SID, collect_logs=True) == Polled(None, [])

"""Stopping, as a use case with plain arguments: no HTTP in sight, the background handed in by the entry point."""

from __future__ import annotations

import pytest

from outpost import errors
from outpost.flavors import FlavorLimits
from outpost.lifecycle.stop import request_stop
from outpost.models import Phase, ServiceId
from outpost.runtime import Runtime, get_runtime
from outpost.settings import Settings
from tests.conftest import start_body

pytestmark = pytest.mark.asyncio
SID = ServiceId("hubA", "srv", "1")


class Recorded:
    """A background that only notes what it is handed."""

    submitted: list[tuple[str, ServiceId]] = []

    def __init__(self, runtime: Runtime) -> None:
        pass

    async def submit(self, kind: str, sid: ServiceId) -> None:
        self.submitted.append((kind, sid))


async def stored(runtime: Runtime) -> None:
    created = await runtime.store.create(
        SID, user="alice", user_id="7", flavor=None, body=start_body(), certs=None, limits=FlavorLimits()
    )
    assert created.ok


async def test_an_unknown_service_is_refused_and_never_readopted(settings: Settings) -> None:
    runtime = await get_runtime()
    with pytest.raises(errors.UnknownService):
        await request_stop(runtime, SID, in_background=False, collect_logs=False)
    assert await runtime.store.stopped(SID)


async def test_a_stop_now_forgets_the_service(settings: Settings) -> None:
    runtime = await get_runtime()
    await stored(runtime)
    assert await request_stop(runtime, SID, in_background=False, collect_logs=True) == []
    assert await runtime.store.meta(SID) is None


async def test_a_background_stop_goes_to_what_the_entry_point_handed_in(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("outpost.runtime._background", Recorded)
    monkeypatch.setattr(Recorded, "submitted", [])
    runtime = await get_runtime()
    await stored(runtime)
    assert await request_stop(runtime, SID, in_background=True, collect_logs=False) is None
    assert Recorded.submitted == [("stop", SID)]
    meta = await runtime.store.meta(SID)
    assert meta is not None and meta.phase == Phase.STOPPING


async def test_without_a_background_an_async_stop_is_a_configuration_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("outpost.runtime._background", None)
    runtime = await get_runtime()
    await stored(runtime)
    with pytest.raises(errors.ConfigurationError):
        await request_stop(runtime, SID, in_background=True, collect_logs=False)

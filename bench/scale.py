"""Part 4: listing one hub and polling one service cost the same with 100 or 10,000 stored services.

Two Redis databases, written through the Store API (`Store.create`, then `save_backend_state` and
`mark_running` for the polled service): "small" holds hub0's 100 services and nothing else; "large"
holds the same 100 plus 9,900 more across hub1…hub9 (10,000 across 10 hubs). A poll function
process serves each database; rounds alternate between them. The polled service is RUNNING with the
state of a real running tiny server, so the poll includes the backend's process check. Redis memory
per record comes from INFO memory around the bulk write and from MEMORY USAGE of sampled keys.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.stack import HUBS, Stack, say, serving, start_body
from bench.throughput import Target, auth_headers, measure
from outpost.flavors import FlavorLimits
from outpost.models import ServiceId
from outpost.runtime import build_runtime
from outpost.store.keys import key_index, key_record

HUB = "hub0"
PER_HUB_SMALL = 100


async def _fill(stack: Stack, db: int, sids: Sequence[ServiceId], concurrency: int = 64) -> None:
    runtime = build_runtime(stack.settings(db))
    gate = asyncio.Semaphore(concurrency)

    async def one(sid: ServiceId) -> None:
        body = start_body(sid.name, sid.start_id, user=f"user-{sid.name}")
        async with gate:
            created = await runtime.store.create(
                sid, user=f"user-{sid.name}", user_id="7", flavor=None, body=body, certs=None, limits=FlavorLimits()
            )
        if not created.ok:
            raise RuntimeError(f"create {sid} refused: {created.refusal}")

    try:
        await asyncio.gather(*(one(sid) for sid in sids))
    finally:
        await runtime.aclose()


async def _make_running(stack: Stack, db: int, sid: ServiceId, state: dict[str, Any], address: str) -> None:
    runtime = build_runtime(stack.settings(db))
    try:
        await runtime.store.save_backend_state(sid, state)
        await runtime.store.mark_running(sid, address.split("://", 1)[-1], address)
    finally:
        await runtime.aclose()


def _hub_sids(hub: str, count: int) -> list[ServiceId]:
    return [ServiceId(hub, f"svc{i}", "1") for i in range(count)]


async def _memory(stack: Stack, db: int) -> dict[str, Any]:
    client = aioredis.from_url(stack.redis_url(db))
    try:
        keys = [key_record(sid) for sid in _hub_sids(HUB, 50)]
        usages = [await client.memory_usage(key, samples=0) for key in keys]
        index = await client.memory_usage(key_index(HUB), samples=0)
        fields = await client.hlen(keys[1])
        value_bytes = sum(len(v) for v in (await client.hgetall(keys[1])).values())
        return {
            "record_hash_bytes_median": int(statistics.median(u for u in usages if u)),
            "record_fields": fields,
            "record_value_bytes": value_bytes,
            "hub_index_bytes_per_member": round((index or 0) / PER_HUB_SMALL, 1),
        }
    finally:
        await client.aclose()


async def _used_memory(stack: Stack) -> int:
    client = aioredis.from_url(stack.redis_url(0))
    try:
        info = await client.info("memory")
        return int(info["used_memory"])
    finally:
        await client.aclose()


def run(
    stack: Stack,
    log_dir: Path,
    running_state: dict[str, Any],
    running_address: str,
    *,
    total: int = 10_000,
    duration: float = 3.0,
    rounds: int = 2,
    force_python: bool = False,
) -> dict[str, Any]:
    small_db, large_db = 1, 2
    hubs = list(HUBS)
    others = [h for h in hubs if h != HUB]
    extra = total - PER_HUB_SMALL
    per_other = extra // len(others)
    polled = _hub_sids(HUB, 1)[0]

    async def fill() -> dict[str, Any]:
        await _fill(stack, small_db, _hub_sids(HUB, PER_HUB_SMALL))
        await _fill(stack, large_db, _hub_sids(HUB, PER_HUB_SMALL))
        before = await _used_memory(stack)
        loop = asyncio.get_running_loop()
        began = loop.time()
        rest = [sid for hub in others for sid in _hub_sids(hub, per_other)]
        await _fill(stack, large_db, rest)
        seconds = loop.time() - began
        after = await _used_memory(stack)
        for db in (small_db, large_db):
            await _make_running(stack, db, polled, running_state, running_address)
        memory = await _memory(stack, large_db)
        memory["used_memory_delta_per_record"] = round((after - before) / len(rest), 1)
        memory["records_written"] = len(rest)
        memory["write_seconds"] = round(seconds, 2)
        memory["writes_per_second"] = round(len(rest) / seconds, 0)
        return memory

    say(f"scale: writing {PER_HUB_SMALL} + {PER_HUB_SMALL + per_other * len(others)} records through Store.create")
    memory = asyncio.run(fill())
    say(
        f"scale: {memory['records_written']} records in {memory['write_seconds']} s; "
        f"{memory['used_memory_delta_per_record']:.0f} bytes of Redis memory per record"
    )
    headers = auth_headers(HUB)
    result: dict[str, Any] = {"totals": {"small": PER_HUB_SMALL, "large": PER_HUB_SMALL + per_other * len(others)}}
    result["hub_services"] = PER_HUB_SMALL
    result["memory"] = memory
    with serving("poll", stack.env(small_db), log_dir) as small, serving("poll", stack.env(large_db), log_dir) as large:
        targets = {
            ("list", "small"): Target("small", small, "/services", headers),
            ("list", "large"): Target("large", large, "/services", headers),
            ("poll", "small"): Target("small", small, f"/services/{polled.name}/{polled.start_id}", headers),
            ("poll", "large"): Target("large", large, f"/services/{polled.name}/{polled.start_id}", headers),
        }
        for (what, size), target in targets.items():
            body = target.fetch()
            listed = body.count(b'"name"')
            if what == "list" and listed != PER_HUB_SMALL:
                raise RuntimeError(f"{size} listing has {listed} services, not {PER_HUB_SMALL}")
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in targets}
        for round_no in range(rounds):
            for what in ("list", "poll"):
                sizes = ("small", "large") if round_no % 2 == 0 else ("large", "small")
                for size in sizes:
                    row = measure(targets[(what, size)], 16, duration, force_python)
                    rows[(what, size)].append(row)
                    say(
                        f"scale: round {round_no + 1}/{rounds} {what} {size:5} c=16 {row['rps']:7.0f} req/s "
                        f"p50 {row['p50_ms']:.2f} ms  cpu {row['worker_cpu_us_per_request']:.0f} µs/req"
                    )
    for what in ("list", "poll"):
        entry: dict[str, Any] = {}
        for size in ("small", "large"):
            runs = rows[(what, size)]
            entry[size] = {
                key: round(statistics.median(r[key] for r in runs), 3)
                for key in ("rps", "p50_ms", "p99_ms", "worker_cpu_us_per_request")
            }
        entry["ratio_p50"] = round(entry["large"]["p50_ms"] / entry["small"]["p50_ms"], 3)
        entry["ratio_rps"] = round(entry["small"]["rps"] / entry["large"]["rps"], 3)
        entry["ratio_cpu"] = round(
            entry["large"]["worker_cpu_us_per_request"] / entry["small"]["worker_cpu_us_per_request"], 3
        )
        result[what] = entry
    return result

"""Part 3: the time the outpost adds to a start and a stop, with a backend command ready at once.

Outpost: a synchronous `POST /services` to the start function and `DELETE /services/<name>/<id>` to
the stop function (functions-framework processes), timed by this process as the hub would see them.
Backend alone: the same `LocalBackend.start(spec)` / `.stop(state)` called directly in this process
with the same command and the same options. Overhead = p50 of the outpost minus p50 of the backend,
at the same concurrency; waves of the two alternate. For scale, the p50 of a POST to the empty
function with the same HTTP client is reported too.

Two commands:
  tiny     tests/support/tiny_singleuser.py, a Python server that binds at once. The local backend
           checks readiness after 5, 10, 20, 40 ms and then every 50 ms, so a start takes some of
           those steps and a difference of two p50s moves in steps of up to 50 ms.
  instant  a perl one-liner that listens at its address at once (a few ms, against Python's tens),
           then sleeps: readiness is seen at the first or second look (0 or 5 ms), so the difference
           has almost no such steps. (A port some other process already listens on, as this used to
           be, is refused now: an address belongs to the server that serves it.)

A stop has steps too: after SIGTERM the backend looks whether the process group is gone after 1,
2, 4, 8, 16 ms and then every 20 ms, so a stop takes a number of steps that depends on a race, in
the outpost and in the baseline alike. The difference of means is reported next to the difference
of p50s; with such steps it is the steadier estimate of what the outpost adds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bench.load import percentiles
from bench.stack import RUN_AS_OWN_USER, Stack, basic_auth, say, start_body
from outpost.backends.base import StartSpec
from outpost.models import ServiceId
from outpost.runtime import build_runtime

T = TypeVar("T")


async def _timed(action: Awaitable[T]) -> tuple[float, T]:
    began = time.perf_counter()
    result = await action
    return time.perf_counter() - began, result


async def run(
    stack: Stack,
    start_url: str,
    stop_url: str,
    empty_url: str,
    *,
    levels: tuple[tuple[int, int], ...] = ((1, 15), (16, 3)),
    backend_config: Path | None = None,
    misc: dict[str, Any] | None = None,
    command: str = "tests/support/tiny_singleuser.py",
) -> dict[str, Any]:
    """`levels`: (concurrency, waves) pairs; `misc` replaces the start body's backend options."""
    runtime = build_runtime(stack.settings(backend_config=backend_config))
    backend = runtime.backend
    auth = {"Authorization": basic_auth("hub1"), "Content-Type": "application/json"}
    counter = 0

    def fresh(prefix: str) -> tuple[str, dict[str, Any]]:
        nonlocal counter
        counter += 1
        name = f"{prefix}{counter}"
        body = start_body(name, start_id="1", user=f"user{counter}")
        if misc is not None:
            body["misc"] = misc
        return name, body

    async def send(client: aiohttp.ClientSession, method: str, url: str, body: str | None = None) -> None:
        async with client.request(method, url, data=body, headers=auth) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"{method} {url} answered {response.status}: {text[:300]}")

    async def outpost_cycle(client: aiohttp.ClientSession, n: int) -> tuple[list[float], list[float]]:
        bodies = [fresh("op") for _ in range(n)]

        async def start(body: dict[str, Any]) -> None:
            await send(client, "POST", start_url + "/services", json.dumps(body))

        async def stop(name: str) -> None:
            await send(client, "DELETE", f"{stop_url}/services/{name}/1")

        starts = await asyncio.gather(*(_timed(start(b)) for _, b in bodies))
        stops = await asyncio.gather(*(_timed(stop(n)) for n, _ in bodies))
        return [t for t, _ in starts], [t for t, _ in stops]

    async def backend_cycle(n: int) -> tuple[list[float], list[float]]:
        bodies = [fresh("bk") for _ in range(n)]

        async def nothing(*_: Any) -> None:
            return None

        def spec(name: str, body: dict[str, Any]) -> StartSpec:
            return StartSpec(sid=ServiceId("direct", name, "1"), env=body["env"], misc=body["misc"])

        specs = [spec(name, body) for name, body in bodies]
        starts = await asyncio.gather(*(_timed(backend.start(s, nothing, nothing)) for s in specs))
        states = [started.state for _, started in starts]
        stops = await asyncio.gather(*(_timed(backend.stop(st)) for st in states))
        return [t for t, _ in starts], [t for t, _ in stops]

    async def empty_cycle(client: aiohttp.ClientSession, n: int) -> list[float]:
        body = json.dumps(start_body("empty"))
        timed = await asyncio.gather(*(_timed(send(client, "POST", empty_url + "/services", body)) for _ in range(n)))
        return [t for t, _ in timed]

    result: dict[str, Any] = {"command": command, "levels": []}
    try:
        # aiohttp: httpx's own cost per request at 16 concurrent ones hid the outpost's share (docs/performance.md).
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
            await outpost_cycle(client, 1)  # warm: first start loads the backend configuration
            await backend_cycle(1)
            await empty_cycle(client, 1)
            for conns, waves in levels:
                samples: dict[str, list[float]] = {
                    k: [] for k in ("outpost_start", "outpost_stop", "backend_start", "backend_stop", "empty_http")
                }
                for wave in range(waves):
                    first_outpost = wave % 2 == 0
                    for which in ("outpost", "backend") if first_outpost else ("backend", "outpost"):
                        if which == "outpost":
                            started, stopped = await outpost_cycle(client, conns)
                        else:
                            started, stopped = await backend_cycle(conns)
                        samples[f"{which}_start"] += started
                        samples[f"{which}_stop"] += stopped
                    samples["empty_http"] += await empty_cycle(client, conns)
                level: dict[str, Any] = {"concurrency": conns, "waves": waves}
                level.update({key: percentiles(values) for key, values in samples.items()})
                for op in ("start", "stop"):
                    outpost_p50 = statistics.median(samples[f"outpost_{op}"])
                    backend_p50 = statistics.median(samples[f"backend_{op}"])
                    level[f"{op}_overhead_p50_ms"] = round((outpost_p50 - backend_p50) * 1000, 2)
                    mean_gap = statistics.fmean(samples[f"outpost_{op}"]) - statistics.fmean(samples[f"backend_{op}"])
                    level[f"{op}_overhead_mean_ms"] = round(mean_gap * 1000, 2)
                result["levels"].append(level)
                p50 = {key: level[key]["p50_ms"] for key in samples}
                say(
                    f"start/stop ({command.split()[0].rsplit('/', 1)[-1]}): c={conns:<2} "
                    f"start {p50['outpost_start']:.1f} ms vs backend {p50['backend_start']:.1f} ms "
                    f"(overhead {level['start_overhead_p50_ms']:.1f} ms); "
                    f"stop {p50['outpost_stop']:.1f} vs {p50['backend_stop']:.1f} ms "
                    f"(overhead {level['stop_overhead_p50_ms']:.1f} ms); empty POST {p50['empty_http']:.1f} ms"
                )
    finally:
        await runtime.aclose()
    return result


# Listens where JUPYTERHUB_SERVICE_URL says, as a notebook server would, and does nothing else.
INSTANT_SERVER = (
    "use Socket; my ($host, $port) = $ENV{JUPYTERHUB_SERVICE_URL} =~ m{//([0-9.]+):([0-9]+)/} or die 'no address'; "
    "socket(my $s, PF_INET, SOCK_STREAM, 0) or die $!; bind($s, sockaddr_in($port, inet_aton($host))) or die $!; "
    "listen($s, 1024) or die $!; sleep 600"
)


def instant_config(path: Path) -> Path:
    path.write_text(
        f"c.LocalProcessBackend.cmd = ['perl', '-e', {INSTANT_SERVER!r}]\n"
        "c.LocalProcessBackend.start_timeout = 20.0\n"
        "c.LocalProcessBackend.stop_timeout = 2.0\n" + RUN_AS_OWN_USER
    )
    return path

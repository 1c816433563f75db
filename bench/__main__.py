"""`python -m bench`: every benchmark of issue 7 in one run, each figure next to its baseline.

    .venv/bin/python -m bench [--quick] [--only throughput,keepalive,coldstart,lifecycle,scale,tunnel,storm,slurm]
                              [--json PATH] [--python-load] [--storm-count N]

Prints progress on stderr, then the table on stdout, and writes the results (with the verdict on
every target) to bench/results/latest.json. Takes about 6 minutes; `--quick` runs the poll (functions
and `outpost dev`), start/stop and cold-start comparisons, shorter, in under three (the check for a
change to the hot path, docs/performance.md); `keepalive` is the poll at one kept-alive connection alone.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import redis
import uvloop

from bench import coldstart, lifecycle, readiness, report, scale, storm, throughput
from bench.outpost_dev import OutpostDev
from bench.stack import HUBS, ROOT, Stack, basic_auth, say, serving, start_body

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("throughput", "keepalive", "readiness", "coldstart", "lifecycle", "scale", "tunnel", "storm", "slurm")
QUICK_PARTS = ("throughput", "readiness", "coldstart", "lifecycle")  # --quick without --only


def _post_start(url: str, name: str, hub: str = "hub0") -> str:
    body = json.dumps(start_body(name)).encode()
    headers = {"Authorization": basic_auth(hub), "Content-Type": "application/json"}
    request = urllib.request.Request(url + "/services", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: str = json.loads(response.read())["service"]
        return answer


def _delete(url: str, name: str, hub: str = "hub0") -> None:
    request = urllib.request.Request(
        f"{url}/services/{name}/1", method="DELETE", headers={"Authorization": basic_auth(hub)}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


async def _backend_state(stack: Stack, name: str) -> dict[str, Any]:
    from outpost.models import ServiceId
    from outpost.runtime import build_runtime

    runtime = build_runtime(stack.settings())
    try:
        _, state, _ = await runtime.store.secrets(ServiceId("hub0", name, "1"))
        assert state is not None
        return state
    finally:
        await runtime.aclose()


async def _pending_records(stack: Stack, names: list[str]) -> None:
    """Stored records without backend state: a stop of one does no backend work."""
    from outpost.flavors import FlavorLimits
    from outpost.models import ServiceId
    from outpost.runtime import build_runtime

    runtime = build_runtime(stack.settings())
    try:
        for name in names:
            await runtime.store.create(
                ServiceId("hub0", name, "1"),
                user=name,
                user_id="7",
                flavor=None,
                body=start_body(name),
                certs=None,
                limits=FlavorLimits(),
            )
    finally:
        await runtime.aclose()


async def _stop_everything(stack: Stack) -> int:
    """Stop every server the local backend started for any hub in the main database."""
    from outpost.lifecycle.stop import stop_if_known
    from outpost.runtime import build_runtime

    runtime = build_runtime(stack.settings())
    stopped = 0
    try:
        async for meta in runtime.store.all_hubs_services():
            await stop_if_known(runtime, meta.id)
            stopped += 1
    finally:
        await runtime.aclose()
    return stopped


def _extra_benchmark(module: str, args: list[str], workdir: Path) -> dict[str, Any] | None:
    """Another engineer's benchmark, `python -m bench.<module>`, if present: its table and its JSON
    (from `--json FILE` when it takes that option, else the last JSON line it prints)."""
    source = Path(__file__).resolve().parent / f"{module}.py"
    if not source.exists():
        return None
    out = workdir / f"{module}.json"
    if '"--json"' in source.read_text():
        args = [*args, "--json", str(out)]
    command = [sys.executable, "-m", f"bench.{module}", *args]
    say(f"{module}: running python {' '.join(command[1:])}")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}
    data: Any = None
    if out.exists():
        data = json.loads(out.read_text())
    else:
        for line in reversed((done.stdout + "\n" + done.stderr).splitlines()):
            if line.startswith("{"):
                data = json.loads(line)
                break
    text = done.stdout.split("\n{", 1)[0].strip()  # its own table, before any JSON it prints
    return {"command": "python " + " ".join(command[1:]), "report": text, "results": data}


DEV_DB = 3  # outpost dev's records, apart from the functions' (db 0) and the scale part's


def _redis_pid(stack: Stack) -> int:
    client = redis.Redis.from_url(stack.redis_url())
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{','.join(QUICK_PARTS)} only, shorter (under 3 minutes)")
    parser.add_argument("--only", help=f"comma-separated parts to run: {','.join(PARTS)}")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write the results")
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    parser.add_argument("--storm-count", type=int, default=300, help="starts in the start storm (--quick: 60)")
    args = parser.parse_args()
    parts = set(args.only.split(",")) if args.only else set(QUICK_PARTS if args.quick else PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    # A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so every process we started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    quick = args.quick
    results: dict[str, Any] = {
        "meta": {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "cpus": os.cpu_count(),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(),
            "functions_framework": importlib.metadata.version("functions-framework"),
            "server": "gunicorn + 1 uvicorn worker (WORKERS unset), "
            + ("httptools" if importlib.util.find_spec("httptools") else "h11")
            + (" + uvloop" if importlib.util.find_spec("uvloop") else ""),
            "quick": quick,
        }
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
    logs = workdir / "logs"
    stack = Stack(workdir).start()
    say(f"redis at {stack.redis_url()}, work directory {workdir}")
    try:
        env = stack.env()
        with (
            serving("empty", env, logs) as empty,
            serving("start", env, logs) as start,
            serving("stop", env, logs) as stop,
            serving("poll", env, logs) as poll,
            serving("floor", env, logs) as floor,
        ):
            stack.events_sink = empty.url  # the stand-in broker for async starts (cold start)
            address = _post_start(start.url, "bench")
            say(f"running service hub0/bench/1 at {address}")
            try:
                if parts & {"throughput", "keepalive"}:
                    headers = throughput.auth_headers("hub0")
                    redis_env = {"OUTPOST_REDIS_URL": stack.redis_url(DEV_DB)}
                    (workdir / "dev").mkdir()
                    with OutpostDev(workdir / "dev", HUBS, {}, redis_env).running() as dev:
                        _post_start(dev.url, "bench")
                        try:
                            results["throughput"] = throughput.run(
                                throughput.Target("poll", poll, "/services/bench/1", headers, _redis_pid(stack)),
                                throughput.Target("empty", empty, "/services/bench/1", headers),
                                others=[
                                    throughput.Target("dev", dev, "/services/bench/1", headers),
                                    throughput.Target("floor", floor, "/services/bench/1", headers),
                                ],
                                connections=(1,) if "throughput" not in parts else (1, 64) if quick else (1, 16, 64),
                                duration=2.0 if quick else 4.0,
                                rounds=2 if quick else 3,
                                force_python=args.python_load,
                            )
                        finally:
                            _delete(dev.url, "bench")
                if "lifecycle" in parts:
                    levels = ((1, 10), (16, 1)) if quick else ((1, 30), (16, 3))
                    if not quick:  # --quick: the instant command alone, which the readiness steps do not blur
                        # uvloop, as in the function's uvicorn worker: the backend alone runs on the same loop.
                        results["lifecycle"] = uvloop.run(
                            lifecycle.run(stack, start.url, stop.url, empty.url, levels=levels)
                        )
                    config = lifecycle.instant_config(workdir / "instant_config.py")
                    instant_env = stack.env(backend_config=config)
                    with serving("start", instant_env, logs) as start2, serving("stop", instant_env, logs) as stop2:
                        results["lifecycle_instant"] = uvloop.run(
                            lifecycle.run(
                                stack,
                                start2.url,
                                stop2.url,
                                empty.url,
                                levels=levels,
                                backend_config=config,
                                misc={},
                                command="perl, listening at once",
                            )
                        )
                if "readiness" in parts:
                    listen_dir = workdir / "listened"
                    config = readiness.config(workdir / "readiness_config.py", listen_dir)
                    ready_env = stack.env(backend_config=config)
                    with serving("start", ready_env, logs) as start3, serving("stop", ready_env, logs) as stop3:
                        results["readiness"] = uvloop.run(
                            readiness.run(stack, start3.url, stop3.url, config, listen_dir, starts=8 if quick else 20)
                        )
                if "coldstart" in parts:
                    reps = 3 if quick else 5
                    asyncio.run(_pending_records(stack, [f"coldstop{rep}" for rep in range(reps)]))
                    results["coldstart"] = coldstart.run(
                        stack.env(),
                        logs,
                        "/services/bench/1",
                        lambda rep: f"/services/coldstop{rep}/1",
                        repetitions=reps,
                    )
                if "scale" in parts:
                    state = asyncio.run(_backend_state(stack, "bench"))
                    results["scale"] = scale.run(
                        stack,
                        logs,
                        state,
                        address,
                        duration=2.0 if quick else 3.0,
                        rounds=1 if quick else 2,
                        force_python=args.python_load,
                    )
            finally:
                _delete(stop.url, "bench")
        if "tunnel" in parts:
            results["tunnel"] = _extra_benchmark("tunnel", ["--quick"] if quick else [], workdir)
        if "storm" in parts:  # its own outpost dev and Redis, after the functions above are stopped
            count = storm.QUICK_COUNT if quick else args.storm_count
            results["storm"] = storm.run(workdir / "storm", count)
        if "slurm" in parts:  # its own single-node Slurm and Redis (needs root and Debian's Slurm)
            results["slurm"] = _extra_benchmark("slurm", ["--quick"] if quick else [], workdir)
        if "throughput" in parts and not quick:
            results["poll_status_cache"] = _extra_benchmark(
                "poll_status_cache", ["--rounds", "4", "--polls", "200"], workdir
            )
    finally:
        try:
            leftovers = asyncio.run(_stop_everything(stack))
            if leftovers:
                say(f"stopped {leftovers} leftover service(s)")
        finally:
            stack.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    verdicts = report.targets(results)
    results["targets"] = report.as_json(verdicts)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report.render(results, verdicts))
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the time goes: the poll path under load, its parts in isolation, and cold-start imports.

  .venv/bin/python -m bench.profile [poll] [parts] [imports] [first] [--seconds 8]

poll     py-spy samples the poll function's worker while wrk keeps 64 connections busy; prints
         the hottest frames (own and inclusive time) and writes a flame graph to bench/results/
parts    the pieces of one poll timed in this process against the same Redis (µs per call)
imports  `python -X importtime` of loading each function as the CLI does: total, the heaviest
         top-level packages, and whether kubernetes / jupyterhub / asyncssh get imported
first    a fresh interpreter per function: load the module, then the first and the second
         request through the ASGI app (what a cold start pays after the imports)
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.load import run_load
from bench.stack import ROOT, TARGETS, Stack, basic_auth, say, serving, start_body

RESULTS = Path(__file__).resolve().parent / "results"
HEAVY = (
    "kubernetes", "kubernetes_asyncio", "jupyterhub", "asyncssh", "kmock", "jupyter_server", "psutil", "httpx", "yaml",
)  # fmt: skip


def _post_start(url: str, name: str) -> None:
    body = json.dumps(start_body(name)).encode()
    headers = {"Authorization": basic_auth("hub0"), "Content-Type": "application/json"}
    request = urllib.request.Request(url + "/services", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def _delete(url: str, name: str) -> None:
    request = urllib.request.Request(
        f"{url}/services/{name}/1", method="DELETE", headers={"Authorization": basic_auth("hub0")}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


# --- poll under load ---------------------------------------------------------------------------------


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Own and inclusive shares of frames in py-spy's collapsed ("raw") output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples; own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive time (outpost, redis, psutil, starlette, functions_framework, cryptography):")
    pattern = re.compile(r"outpost|redis/|psutil|starlette|functions_framework|cryptography|prometheus|uuid")
    picked = [(f, n) for f, n in inclusive.most_common() if pattern.search(f)][:top]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in picked]
    return "\n".join(lines)


def profile_poll(stack: Stack, logs: Path, seconds: float) -> str:
    if not shutil.which("py-spy"):
        return "py-spy not found (pip install py-spy)"
    env = stack.env()
    with serving("start", env, logs) as start, serving("poll", env, logs) as poll, serving("stop", env, logs) as stop:
        _post_start(start.url, "profiled")
        try:
            url = poll.url + "/services/profiled/1"
            headers = {"Authorization": basic_auth("hub0")}
            run_load(url, 64, 2.0, headers=headers)
            worker = poll.worker_pids()[0]
            RESULTS.mkdir(parents=True, exist_ok=True)
            raw, svg = RESULTS / "poll-profile.txt", RESULTS / "poll-profile.svg"
            spy_args = ["--pid", str(worker), "--duration", f"{seconds:g}", "--rate", "200", "--nonblocking"]
            spy = subprocess.Popen(
                ["py-spy", "record", *spy_args, "--format", "raw", "-o", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            load = run_load(url, 64, seconds + 1, headers=headers)
            spy.wait()
            flame = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    *spy_args[:2],
                    "--duration",
                    "4",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "-o",
                    str(svg),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            run_load(url, 64, 5, headers=headers)
            flame.wait()
        finally:
            _delete(stop.url, "profiled")
    return (
        f"poll under wrk -c64: {load.rps:.0f} req/s, p99 {load.p99_ms:.1f} ms\n"
        + summarize_collapsed(raw)
        + (f"\nflame graph: {svg}\ncollapsed stacks: {raw}")
    )


# --- the parts of one poll, in this process ------------------------------------------------------------


async def _per_call(fn: Callable[[], Awaitable[Any]], n: int = 2000) -> float:
    for _ in range(min(200, n)):
        await fn()
    began = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - began) / n * 1e6


async def _parts(stack: Stack) -> list[tuple[str, float | str]]:
    import importlib.util

    from starlette.requests import Request

    from outpost.models import ServiceId
    from outpost.redis_client import redis_client
    from outpost.routes import http
    from outpost.runtime import close_runtime, get_runtime, use_settings
    from outpost.store.keys import key_record
    from outpost.store.records import PLAIN_FIELDS, POLL_FIELDS

    use_settings(stack.settings())
    runtime = await get_runtime()
    spec = importlib.util.spec_from_file_location("poll_main", TARGETS["poll"][1])
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sid = ServiceId("hub0", "profiled", "1")
    key = key_record(sid)
    header = basic_auth("hub0").encode()
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/services/profiled/1",
        "raw_path": b"/services/profiled/1",
        "query_string": b"",
        "headers": [(b"authorization", header), (b"host", b"bench")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "root_path": "",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    view = await runtime.store.meta_and_state(sid)
    assert view is not None
    state = view.state
    redis = redis_client(runtime.settings)  # the raw commands under the store's reads, for comparison
    token = await redis.hget(key, "state")
    candidates: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("redis PING (one round trip)", lambda: redis.ping()),
        (
            f"HMGET {len(PLAIN_FIELDS) + 1} fields (meta_and_state's read)",
            lambda: redis.hmget(key, [*PLAIN_FIELDS, "state"]),
        ),
        (f"HMGET {len(POLL_FIELDS)} fields (the poll's read)", lambda: redis.hmget(key, POLL_FIELDS)),
        ("decrypt state (Fernet)", lambda: _sync(runtime.store.crypt.decrypt_json, token)),
        ("store.meta_and_state", lambda: runtime.store.meta_and_state(sid)),
        ("store.poll_record", lambda: runtime.store.poll_record(sid)),
        ("backend.poll (local backend)", lambda: runtime.backend.poll(state or {})),
        ("settings.hub_credentials()", lambda: _sync(runtime.settings.hub_credentials)),
        (
            "Starlette Request + query_params",
            lambda: _sync(lambda: Request(scope, receive).query_params),
        ),
        ("http.dispatch, whole poll", lambda: http.dispatch(Request(scope, receive), module.ROUTES)),
    ]
    rows: list[tuple[str, float | str]] = []
    for label, fn in candidates:
        try:
            rows.append((label, await _per_call(fn)))
        except Exception as exc:  # the library moves; report what no longer fits
            rows.append((label, f"n/a ({type(exc).__name__}: {exc})"))
    await redis.aclose()
    await close_runtime()
    use_settings(None)
    return rows


async def _sync(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def profile_parts(stack: Stack, logs: Path) -> str:
    with serving("start", stack.env(), logs) as start, serving("stop", stack.env(), logs) as stop:
        _post_start(start.url, "profiled")
        try:
            import uvloop

            rows = uvloop.run(_parts(stack))
        finally:
            _delete(stop.url, "profiled")
    width = max(len(label) for label, _ in rows)
    return "one poll, piece by piece (µs per call, this process, same Redis):\n" + "\n".join(
        f"  {label:{width}}  {value:8.1f}" if isinstance(value, float) else f"  {label:{width}}  {value}"
        for label, value in rows
    )


# --- imports and the first request -----------------------------------------------------------------------

_LOAD = """
import sys
from functions_framework import create_app
create_app({target!r}, {source!r})
"""


def profile_imports() -> str:
    lines = []
    for name, (target, source) in TARGETS.items():
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", _LOAD.format(target=target, source=str(source))],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        own: collections.Counter[str] = collections.Counter()
        cumulative: dict[str, int] = {}
        for line in done.stderr.splitlines():
            found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
            if found:
                own[found[3].split(".")[0]] += int(found[1])
                cumulative[found[3]] = int(found[2])
        total = sum(own.values()) / 1000
        heavy = [m for m in HEAVY if m in cumulative]
        outpost = sorted(((k, v) for k, v in cumulative.items() if k.startswith("outpost.")), key=lambda kv: -kv[1])
        lines.append(
            f"{name}: {total:.0f} ms of imports; heaviest packages: "
            + ", ".join(f"{k} {v / 1000:.0f}" for k, v in own.most_common(10))
        )
        lines.append(f"   heavy modules imported: {', '.join(heavy) or 'none'}")
        if outpost:
            lines.append(
                "   outpost modules (cumulative ms): "
                + ", ".join(f"{k.removeprefix('outpost.')} {v / 1000:.0f}" for k, v in outpost[:8])
            )
    floor = []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _FLOOR], capture_output=True, text=True, cwd=ROOT)
        floor.append(float(done.stdout.strip() or "nan"))
    lines.append(
        f"floor: importing {', '.join(FLOOR_MODULES)} after functions_framework takes {min(floor):.0f} ms "
        "(min of 3): third-party modules a function needs before its first answer"
    )
    return "imports when the CLI loads each function (python -X importtime):\n" + "\n".join(lines)


FLOOR_MODULES = ("redis.asyncio", "pydantic_settings", "cryptography.fernet", "prometheus_client", "traitlets.config")
_FLOOR = f"""
import time, importlib, functions_framework, functions_framework.aio
began = time.perf_counter()
for name in {FLOOR_MODULES!r}:
    importlib.import_module(name)
print((time.perf_counter() - began) * 1000)
"""


_FIRST = """
import time, json, asyncio, sys
t0 = time.perf_counter()
from functions_framework import create_app
t1 = time.perf_counter()
app = create_app({target!r}, {source!r})
t2 = time.perf_counter()
scope = {{"type": "http", "method": {method!r}, "path": {path!r}, "raw_path": {path!r}.encode(),
         "query_string": b"", "headers": {headers!r}, "client": ("127.0.0.1", 40000),
         "server": ("127.0.0.1", 80), "scheme": "http", "root_path": "", "http_version": "1.1"}}
async def call():
    sent = []
    async def receive():
        return {{"type": "http.request", "body": {body!r}, "more_body": False}}
    async def send(message):
        sent.append(message)
    await app(scope, receive, send)
    if sent[0]["status"] >= 400:
        print(sent[1].get("body", b"")[:300], file=sys.stderr)
    return sent[0]["status"]
async def main():
    a = time.perf_counter(); s1 = await call(); b = time.perf_counter()
    s2 = await call() if {again!r} else s1; c = time.perf_counter()
    return s1, s2, a, b, c
s1, s2, a, b, c = asyncio.run(main())
mods = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"framework_import_ms": (t1 - t0) * 1000, "module_load_ms": (t2 - t1) * 1000,
                  "first_request_ms": (b - a) * 1000, "second_request_ms": (c - b) * 1000,
                  "status": [s1, s2], "heavy_after_first_request": mods}}))
"""


def profile_first(stack: Stack, logs: Path) -> str:
    auth = [(b"authorization", basic_auth("hub0").encode()), (b"content-type", b"application/json")]
    env = stack.env()
    lines = ["a fresh interpreter per function (min of 3): framework import, module load, 1st and 2nd request (ms)"]
    with (
        serving("start", env, logs) as start,
        serving("stop", env, logs) as stop,
        serving("empty", env, logs) as sink,
    ):
        _post_start(start.url, "profiled")
        try:
            # name -> method, path, headers, the body of repetition n, whether to send a second request
            requests: dict[str, tuple[str, str, list[tuple[bytes, bytes]], Callable[[int], bytes], bool]] = {
                "empty": ("GET", "/", [], lambda _: b"", True),
                "poll": ("GET", "/services/profiled/1", auth, lambda _: b"", True),
                "start": (
                    "POST",
                    "/services",
                    auth + [(b"execution-type", b"async")],
                    lambda rep: json.dumps(start_body(f"first{rep}")).encode(),  # a new service each time
                    False,
                ),
                "stop": ("DELETE", "/services/nothing/1", auth, lambda _: b"", True),  # 404 after the same work
            }
            for name, (method, path, headers, body_of, again) in requests.items():
                target, source = TARGETS[name]
                runs: list[dict[str, Any]] = []
                for rep in range(3):
                    body = body_of(rep)
                    code = _FIRST.format(
                        target=target,
                        source=str(source),
                        method=method,
                        path=path,
                        headers=[*headers, (b"content-length", str(len(body)).encode())],
                        body=body,
                        again=again,
                        heavy=HEAVY,
                    )
                    env_run = {**env, "OUTPOST_EVENTS_SINK": sink.url} if name == "start" else env
                    done = subprocess.run(
                        [sys.executable, "-c", code], capture_output=True, text=True, env=env_run, cwd=ROOT
                    )
                    if done.returncode != 0:
                        runs = []
                        lines.append(f"  {name}: failed: {done.stderr.strip().splitlines()[-1:]}")
                        break
                    runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                if runs:
                    best = {k: min(r[k] for r in runs) for k in runs[0] if k.endswith("_ms")}
                    lines.append(
                        f"  {name:5}  framework {best['framework_import_ms']:6.1f}  module "
                        f"{best['module_load_ms']:6.1f}  1st request {best['first_request_ms']:6.1f}  "
                        f"2nd {best['second_request_ms']:5.1f}  status {runs[0]['status']}  heavy modules "
                        f"loaded: {', '.join(runs[0]['heavy_after_first_request']) or 'none'}"
                    )
        finally:
            _delete(stop.url, "profiled")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", default=["poll", "parts", "imports", "first"])
    parser.add_argument("--seconds", type=float, default=8.0, help="py-spy sampling time under load")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-", dir="/tmp"))
    logs = workdir / "logs"
    stack = Stack(workdir).start()
    try:
        for what in args.what:
            say(f"profile: {what}")
            if what == "poll":
                print(profile_poll(stack, logs, args.seconds), flush=True)
            elif what == "parts":
                print(profile_parts(stack, logs), flush=True)
            elif what == "imports":
                print(profile_imports(), flush=True)
            elif what == "first":
                print(profile_first(stack, logs), flush=True)
            else:
                parser.error(f"unknown: {what}")
            print(flush=True)
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())

"""Closed-loop HTTP load: `wrk` (Debian package) with a Lua script, else a multi-process Python client.

Both keep `connections` HTTP/1.1 connections busy for `duration` seconds and report requests/s,
p50/p99 latency and errors (non-2xx answers count as errors).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

WRK = shutil.which("wrk")

# wrk calls done() once at the end; latency is in microseconds.
_WRK_SCRIPT = """
wrk.method = "%(method)s"
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "mean_us": %%.1f, ' ..
    '"errors": %%d, "non_2xx": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(frozen=True)
class LoadResult:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    tool: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def tool_name() -> str:
    return "wrk" if WRK else "python-multiprocess"


def run_load(
    url: str,
    connections: int,
    duration: float,
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    force_python: bool = False,
) -> LoadResult:
    if WRK and not force_python:
        return _wrk(url, connections, duration, headers or {}, method)
    return _python(url, connections, duration, headers or {}, method)


def _wrk(url: str, connections: int, duration: float, headers: dict[str, str], method: str) -> LoadResult:
    assert WRK is not None
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % {"method": method, "headers": lines})
    try:
        # One wrk thread: on a small machine a second one only takes CPU from the server.
        seconds = max(1, round(duration))  # wrk takes whole seconds
        out = subprocess.run(
            [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    line = next(line for line in out.splitlines() if line.startswith("BENCH-JSON "))
    data = json.loads(line.removeprefix("BENCH-JSON "))
    seconds = data["duration_us"] / 1e6
    return LoadResult(
        connections=connections,
        requests=data["requests"],
        seconds=round(seconds, 3),
        rps=round(data["requests"] / seconds, 1),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=round(data["mean_us"] / 1000, 3),
        errors=data["errors"] + data["non_2xx"],
        tool="wrk",
    )


# --- the fallback: N processes, each an asyncio loop with its share of the connections -------------


def _python(url: str, connections: int, duration: float, headers: dict[str, str], method: str) -> LoadResult:
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    processes = max(1, min(os.cpu_count() or 1, connections))
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    head = f"{method} /{path} HTTP/1.1\r\nHost: {host_port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        parts = pool.starmap(_client_process, [(host, int(port or 80), head.encode(), n, duration) for n in shares])
    latencies = sorted(lat for part in parts for lat in part[0])
    errors = sum(part[1] for part in parts)
    if not latencies:
        raise RuntimeError(f"no successful request to {url}")
    return LoadResult(
        connections=connections,
        requests=len(latencies),
        seconds=duration,
        rps=round(len(latencies) / duration, 1),
        p50_ms=round(_percentile(latencies, 50) * 1000, 3),
        p99_ms=round(_percentile(latencies, 99) * 1000, 3),
        mean_ms=round(statistics.fmean(latencies) * 1000, 3),
        errors=errors,
        tool="python-multiprocess",
    )


def _percentile(ordered: list[float], pct: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _client_process(host: str, port: int, request: bytes, connections: int, duration: float) -> tuple[list[float], int]:
    return asyncio.run(_clients(host, port, request, connections, duration))


async def _clients(host: str, port: int, request: bytes, connections: int, duration: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + duration

    async def one() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < end:
                began = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if head[9:10] == b"2":
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return latencies, errors


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p99/min/max in milliseconds of samples in seconds."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(_percentile(ordered, 99) * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }

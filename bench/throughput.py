"""Part 1: poll throughput and latency of the deployed poll function against the empty function.

Both run as `functions-framework --target … --source …` processes (gunicorn + one uvicorn worker).
The poll function answers `GET /services/<name>/<start_id>` with Basic auth for a real running
service (the tiny server, started through the start function); the empty function answers the same
request with a body of the same size. Rounds alternate between the two so that noise from the
machine falls on both. Besides wall-clock figures, each run records the CPU time the worker and
Redis spent per request, which other load on a shared machine disturbs much less.
"""

from __future__ import annotations

import os
import statistics
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench.load import run_load, tool_name
from bench.stack import FunctionProcess, basic_auth, say

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total / CLK_TCK


@dataclass
class Target:
    name: str
    fn: FunctionProcess
    path: str
    headers: dict[str, str]
    redis_pid: int | None = None

    @property
    def url(self) -> str:
        return self.fn.url + self.path

    def fetch(self) -> bytes:
        request = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body


def measure(target: Target, connections: int, duration: float, force_python: bool) -> dict[str, Any]:
    workers = target.fn.worker_pids()
    redis_pids = [target.redis_pid] if target.redis_pid else []
    cpu_before, redis_before = cpu_seconds(workers), cpu_seconds(redis_pids)
    result = run_load(target.url, connections, duration, headers=target.headers, force_python=force_python)
    cpu = cpu_seconds(workers) - cpu_before
    redis_cpu = cpu_seconds(redis_pids) - redis_before
    row: dict[str, Any] = result.as_dict()
    row["worker_cpu_us_per_request"] = round(cpu / max(result.requests, 1) * 1e6, 1)
    row["redis_cpu_us_per_request"] = round(redis_cpu / max(result.requests, 1) * 1e6, 1) if redis_pids else None
    return row


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(row[key] for row in rows)), 3)


def run(
    poll: Target,
    empty: Target,
    *,
    connections: tuple[int, ...] = (1, 16, 64),
    duration: float = 4.0,
    rounds: int = 2,
    force_python: bool = False,
) -> dict[str, Any]:
    poll_body, empty_body = poll.fetch(), empty.fetch()
    if len(poll_body) != len(empty_body):
        raise RuntimeError(f"bodies differ in size: poll {poll_body!r}, empty {empty_body!r}")
    say(f"poll: warming up both functions (load generator: {tool_name() if not force_python else 'python'})")
    for target in (empty, poll):
        run_load(target.url, 16, 1.0, headers=target.headers, force_python=force_python)
    raw: dict[str, dict[int, list[dict[str, Any]]]] = {"empty": {}, "poll": {}}
    for round_no in range(rounds):
        for conns in connections:
            for target in (empty, poll) if round_no % 2 == 0 else (poll, empty):
                row = measure(target, conns, duration, force_python)
                raw[target.name].setdefault(conns, []).append(row)
                say(
                    f"poll: round {round_no + 1}/{rounds} {target.name:5} c={conns:<3} {row['rps']:8.0f} req/s  "
                    f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
                    f"cpu {row['worker_cpu_us_per_request']:.0f} µs/req  errors {row['errors']}"
                )
    table = []
    for conns in connections:
        cells: dict[str, Any] = {"connections": conns}
        for name in ("empty", "poll"):
            rows = raw[name][conns]
            cells[name] = {key: _median(rows, key) for key in ("rps", "p50_ms", "p99_ms", "worker_cpu_us_per_request")}
            cells[name]["errors"] = sum(row["errors"] for row in rows)
            if rows[0].get("redis_cpu_us_per_request") is not None:
                cells[name]["redis_cpu_us_per_request"] = _median(rows, "redis_cpu_us_per_request")
        e, p = cells["empty"], cells["poll"]
        cells["ratio"] = {
            "rps": round(p["rps"] / e["rps"], 3),
            "p50": round(p["p50_ms"] / e["p50_ms"], 3),
            "p99": round(p["p99_ms"] / e["p99_ms"], 3),
            "worker_cpu": round(p["worker_cpu_us_per_request"] / e["worker_cpu_us_per_request"], 3),
        }
        table.append(cells)
    return {
        "tool": "python-multiprocess" if force_python else tool_name(),
        "duration_s": duration,
        "rounds": rounds,
        "body_bytes": len(poll_body),
        "poll_body": poll_body.decode(),
        "table": table,
        "runs": raw,
    }


def auth_headers(hub: str) -> dict[str, str]:
    return {"Authorization": basic_auth(hub)}

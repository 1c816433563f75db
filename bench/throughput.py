"""Part 1: poll throughput and latency of the deployed poll function against the empty function.

Both run as `functions-framework --target … --source …` processes (gunicorn + one uvicorn worker);
the same poll through `outpost dev`'s API port (one process serving the three functions with uvicorn
on a socket it binds itself) is measured against the same baseline. One connection is the shape a
lost TCP_NODELAY shows in (issue 24): a kept-alive request whose body waits for the client's delayed
ACK takes 40 ms whatever the server's speed; `--only keepalive` measures that shape alone.
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bench.load import run_load, tool_name
from bench.stack import basic_auth, say

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


class Served(Protocol):
    """A function process (`bench.stack.FunctionProcess`) or `outpost dev` (`bench.outpost_dev.OutpostDev`)."""

    url: str

    def worker_pids(self) -> list[int]: ...


@dataclass
class Target:
    name: str
    fn: Served
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
    others: Sequence[Target] = (),
    connections: tuple[int, ...] = (1, 16, 64),
    duration: float = 4.0,
    rounds: int = 2,
    force_python: bool = False,
) -> dict[str, Any]:
    """Each target at each number of connections, rounds alternating the order; ratios against `empty`
    (`ratio` for the poll function, `ratio_<name>` for the others: `dev`, the poll through `outpost dev`,
    and `floor`, the empty function reading one Redis key)."""
    targets: Sequence[Target] = [empty, poll, *others]
    bodies = {target.name: target.fetch() for target in targets}
    if len(set(map(len, bodies.values()))) != 1:
        raise RuntimeError(f"bodies differ in size: {bodies}")
    say(f"poll: warming up (load generator: {tool_name() if not force_python else 'python'})")
    for target in targets:
        run_load(target.url, 16, 1.0, headers=target.headers, force_python=force_python)
    raw: dict[str, dict[int, list[dict[str, Any]]]] = {target.name: {} for target in targets}
    for round_no in range(rounds):
        for conns in connections:
            for target in targets if round_no % 2 == 0 else targets[::-1]:
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
        for name, rows in raw.items():
            rows = rows[conns]
            cells[name] = {key: _median(rows, key) for key in ("rps", "p50_ms", "p99_ms", "worker_cpu_us_per_request")}
            cells[name]["errors"] = sum(row["errors"] for row in rows)
            if rows[0].get("redis_cpu_us_per_request") is not None:
                cells[name]["redis_cpu_us_per_request"] = _median(rows, "redis_cpu_us_per_request")
        cells["ratio"] = _ratios(cells[poll.name], cells[empty.name])
        for other in others:
            cells[f"ratio_{other.name}"] = _ratios(cells[other.name], cells[empty.name])
        table.append(cells)
    return {
        "tool": "python-multiprocess" if force_python else tool_name(),
        "duration_s": duration,
        "rounds": rounds,
        "body_bytes": len(bodies[poll.name]),
        "poll_body": bodies[poll.name].decode(),
        "table": table,
        "runs": raw,
    }


def _ratios(measured: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    return {
        "rps": round(measured["rps"] / baseline["rps"], 3),
        "p50": round(measured["p50_ms"] / baseline["p50_ms"], 3),
        "p99": round(measured["p99_ms"] / baseline["p99_ms"], 3),
        "worker_cpu": round(measured["worker_cpu_us_per_request"] / baseline["worker_cpu_us_per_request"], 3),
    }


def auth_headers(hub: str) -> dict[str, str]:
    return {"Authorization": basic_auth(hub)}

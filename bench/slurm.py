"""The Slurm backend against a real single-node Slurm (issue 25): what polls and starts cost the controller, and
how much later than a bare `sbatch` a server is up.

    .venv/bin/python -m bench.slurm [--quick] [--path commands|rest|both] [--json PATH]

Runs as root with Debian's Slurm (`sh tools/install_slurm.sh`): tools/slurm_single_node.py's cluster in a
directory of its own, its node declared with 64 CPUs (idle servers need no more), and an embedded Redis for the
shared job list. For each path (the Slurm commands, slurmrestd):

- starts: rounds of 10 at once, alternating with rounds of 10 bare jobs (50 of each; `--quick`: 20). A bare
  job is the same server (tests/support/tiny_singleuser.py, as `nobody`, the same directory) submitted with
  `sbatch --wrap` on a port chosen here, so nothing needs to find its port; its latency is sbatch to a socket
  that accepts. A backend start's is `SlurmJobBackend.start` to its return, which waits for the job's proof
  and a connection too. Both include the scheduling; the ratio is the backend's own cost.
- polls: 1,000 (`--quick`: 200) over 20 s (`--quick`: 10 s) from 4 backend objects (as 4 function
  instances) sharing the Redis, round-robin over the 50 running servers; every answer must be "running".

The controller's RPCs are read from `sdiag` (its count per message type, without sdiag's own
REQUEST_STATS_INFO) before and after each phase: per poll and per start, REQUEST_JOB_INFO apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from traitlets.config import Config

from bench.stack import ROOT, TINY_SERVER, say
from outpost.backends.base import StartSpec
from outpost.backends.slurm.backend import SlurmJobBackend
from outpost.cli.embedded_redis import EmbeddedRedis
from outpost.models import ServiceId
from outpost.store.snapshots import SharedSnapshots
from tools.slurm_single_node import SingleNodeSlurm, binaries_missing

JOB_USER = "nobody"
NODE_PYTHON = "/usr/bin/python3"  # one the job's account may run
CPUS = 64
PER_ROUND = 10
INSTANCES = 4
JOB_INFO = "REQUEST_JOB_INFO"
SDIAG_OWN = "REQUEST_STATS_INFO"


def rpc_counts(cluster: SingleNodeSlurm) -> dict[str, int]:
    """sdiag's count per RPC message type (the controller's own tally since it started)."""
    out = subprocess.run(["sdiag"], env=cluster.env, capture_output=True, text=True, check=True).stdout
    counts: dict[str, int] = {}
    section = out.split("by message type", 1)[1].split("by user", 1)[0]
    for line in section.splitlines():
        if "count:" in line:
            counts[line.split()[0]] = int(line.split("count:")[1].split()[0])
    return counts


def rpc_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after[name] - before.get(name, 0) for name in after if name != SDIAG_OWN}
    return {name: count for name, count in sorted(delta.items()) if count}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_listening(port: int) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return


async def bare_start(cluster: SingleNodeSlurm) -> tuple[float, str]:
    """sbatch of the server alone on a port chosen here; seconds until it accepts, and the job id."""
    port = free_port()
    env = {"PATH": os.environ["PATH"], "SLURM_CONF": str(cluster.conf),
           "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/"}  # fmt: skip
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "sbatch", "--parsable", f"--uid={JOB_USER}", f"--chdir={cluster.root / 'jobs'}", "--output=/dev/null",
        "--job-name=bare", f"--wrap=exec {NODE_PYTHON} {cluster.root / 'tiny_singleuser.py'}",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    await asyncio.wait_for(until_listening(port), 120)
    return time.perf_counter() - began, out.decode().strip()


def backend_config(cluster: SingleNodeSlurm, path: str) -> Config:
    config = Config()
    o = config.SlurmBackend
    o.cmd = [NODE_PYTHON, str(cluster.root / "tiny_singleuser.py")]
    o.python = NODE_PYTHON
    o.job_user = JOB_USER
    o.job_dir = str(cluster.root / "jobs")
    if path == "rest":
        o.rest_url = cluster.rest_url
        o.rest_token = cluster.token("root")
        o.rest_user = "root"
    return config  # every interval at its default: what an administrator gets


def spec(number: int) -> StartSpec:
    name = f"bench{number}"
    return StartSpec(
        sid=ServiceId("hub0", name, f"{name}-{time.monotonic_ns()}"),
        env={"JUPYTERHUB_USER": "alice", "JUPYTERHUB_SERVICE_PREFIX": f"/user/alice/{name}/"},
    )


async def backend_start(backend: SlurmJobBackend, number: int) -> tuple[float, dict[str, Any]]:
    async def ignore(*_: Any) -> None:
        return None

    began = time.perf_counter()
    started = await backend.start(spec(number), ignore, ignore)
    return time.perf_counter() - began, started.state


def queued_ids(cluster: SingleNodeSlurm) -> set[str]:
    out = subprocess.run(["squeue", "--noheader", "--format=%i"], env=cluster.env, capture_output=True, text=True)
    return set(out.stdout.split())


async def until_gone(cluster: SingleNodeSlurm, job_ids: set[str]) -> None:
    while job_ids & queued_ids(cluster):
        await asyncio.sleep(0.2)


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"p50_s": statistics.median(ordered), "p90_s": ordered[int(0.9 * (len(ordered) - 1))],
            "max_s": ordered[-1]}  # fmt: skip


async def run_path(cluster: SingleNodeSlurm, client: aioredis.Redis, path: str, starts: int, polls: int,
                   poll_seconds: float) -> dict[str, Any]:  # fmt: skip
    await client.flushall()  # a fresh job list for this path
    instances = [SlurmJobBackend(backend_config(cluster, path), SharedSnapshots(client)) for _ in range(INSTANCES)]
    backend = instances[0]
    bare: list[float] = []
    ours: list[float] = []
    states: list[dict[str, Any]] = []
    bare_rpcs: dict[str, int] = {}
    start_rpcs: dict[str, int] = {}
    try:
        for round_number in range(starts // PER_ROUND):
            for kind in ("bare", "backend") if round_number % 2 == 0 else ("backend", "bare"):
                before = rpc_counts(cluster)
                if kind == "bare":
                    done = await asyncio.gather(*(bare_start(cluster) for _ in range(PER_ROUND)))
                    bare += [seconds for seconds, _ in done]
                    delta = rpc_delta(before, rpc_counts(cluster))
                    job_ids = {job_id for _, job_id in done}
                    subprocess.run(["scancel", *job_ids], env=cluster.env, check=True)
                    await until_gone(cluster, job_ids)
                    total = bare_rpcs
                else:
                    first = len(states)
                    made = await asyncio.gather(*(backend_start(backend, first + n) for n in range(PER_ROUND)))
                    ours += [seconds for seconds, _ in made]
                    states += [state for _, state in made]
                    delta = rpc_delta(before, rpc_counts(cluster))
                    total = start_rpcs
                for name, count in delta.items():
                    total[name] = total.get(name, 0) + count
            say(f"slurm/{path}: round {round_number + 1}: bare p50 {statistics.median(bare):.2f} s, "
                f"backend p50 {statistics.median(ours):.2f} s")  # fmt: skip

        say(f"slurm/{path}: {polls} polls over {poll_seconds:.0f} s from {INSTANCES} instances, "
            f"{len(states)} servers running")  # fmt: skip
        before = rpc_counts(cluster)
        poll_latencies: list[float] = []
        began = time.perf_counter()
        for number in range(polls):
            await asyncio.sleep(max(0.0, began + number * poll_seconds / polls - time.perf_counter()))
            at = time.perf_counter()
            status = await instances[number % INSTANCES].poll(states[number % len(states)])
            poll_latencies.append(time.perf_counter() - at)
            if status is not None:
                raise RuntimeError(f"a running server polled as ended ({status})")
        poll_rpcs = rpc_delta(before, rpc_counts(cluster))
    finally:
        await asyncio.gather(*(backend.stop(state) for state in states))
        await until_gone(cluster, {str(state["job_id"]) for state in states})
        for instance in instances:
            await instance.aclose()
    count = len(ours)
    return {
        "path": path,
        "starts": count,
        "bare_start": summary(bare),
        "backend_start": summary(ours),
        "start_latency_ratio_p50": statistics.median(ours) / statistics.median(bare),
        "rpcs_per_start": {name: n / count for name, n in start_rpcs.items()},
        "rpcs_per_bare_start": {name: n / len(bare) for name, n in bare_rpcs.items()},
        "polls": polls,
        "poll_seconds": poll_seconds,
        "servers_polled": len(states),
        "query_interval_s": backend._defaults.query_interval,  # noqa: SLF001 (the option in force)
        "poll_p50_ms": 1000 * statistics.median(poll_latencies),
        "poll_rpcs": poll_rpcs,
        "job_info_per_poll": poll_rpcs.get(JOB_INFO, 0) / polls,
        "rpcs_per_poll": sum(poll_rpcs.values()) / polls,
    }


def render(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        b, o = r["bare_start"], r["backend_start"]
        per_start = ", ".join(f"{k} {v:.2f}" for k, v in r["rpcs_per_start"].items())
        per_bare = ", ".join(f"{k} {v:.2f}" for k, v in r["rpcs_per_bare_start"].items())
        lines += [
            f"path {r['path']}: {r['starts']} starts, 10 at once, next to as many bare sbatch jobs",
            f"   start to listening: backend p50 {o['p50_s']:.2f} s (p90 {o['p90_s']:.2f}, max {o['max_s']:.2f}); "
            f"bare sbatch p50 {b['p50_s']:.2f} s (p90 {b['p90_s']:.2f}); ratio {r['start_latency_ratio_p50']:.2f}x",
            f"   controller RPCs per start: {per_start}",
            f"   per bare sbatch start:     {per_bare}",
            f"   {r['polls']} polls in {r['poll_seconds']:.0f} s of {r['servers_polled']} servers (query_interval "
            f"{r['query_interval_s']:.0f} s): {r['job_info_per_poll']:.4f} {JOB_INFO} per poll, "
            f"{r['rpcs_per_poll']:.4f} RPCs of any kind per poll {r['poll_rpcs']}; poll p50 {r['poll_p50_ms']:.2f} ms",
        ]
    return "\n".join(lines)


async def run(paths: list[str], starts: int, polls: int, poll_seconds: float, workdir: Path) -> list[dict[str, Any]]:
    workdir.mkdir(mode=0o755)
    cluster = SingleNodeSlurm(workdir, cpus=CPUS)
    redis_server = EmbeddedRedis(workdir / "redis", appendonly=False)
    say(f"slurm: a single-node Slurm with {CPUS} CPUs in {workdir}")
    try:
        cluster.start()
        shutil.copy(TINY_SERVER, workdir / "tiny_singleuser.py")
        (workdir / "tiny_singleuser.py").chmod(0o644)
        (workdir / "jobs").mkdir()
        (workdir / "jobs").chmod(0o1777)
        os.environ["SLURM_CONF"] = str(cluster.conf)  # the backend's commands find the private cluster
        redis_server.start()
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            return [await run_path(cluster, client, path, starts, polls, poll_seconds) for path in paths]
        finally:
            await client.aclose()
    finally:
        redis_server.stop()
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slurm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 starts and 200 polls per path")
    parser.add_argument("--path", choices=["commands", "rest", "both"], default="both")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    missing = binaries_missing()
    if missing or os.geteuid() != 0:
        print(f"needs root and Slurm (missing: {' '.join(missing) or 'none'}): sh tools/install_slurm.sh",
              file=sys.stderr)  # fmt: skip
        return 1
    starts, polls, poll_seconds = (20, 200, 10.0) if args.quick else (50, 1000, 20.0)
    paths = ["commands", "rest"] if args.path == "both" else [args.path]
    workdir = Path("/tmp") / f"obench-slurm-{os.getpid()}"  # short: munge's socket path has a length limit
    try:
        results = asyncio.run(run(paths, starts, polls, poll_seconds, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    else:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())

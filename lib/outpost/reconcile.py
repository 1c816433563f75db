"""Clean up after crashes, on every timer tick: records stuck starting or stopping past a deadline,
and servers that run without any record (a function died between starting them and storing them)."""

from __future__ import annotations

import datetime as dt
import logging

from outpost.models import Phase
from outpost.operations import abandon
from outpost.runtime import Runtime
from outpost.store import key_record

log = logging.getLogger(__name__)
GRACE_SECONDS = 60.0


async def reconcile(runtime: Runtime, now: dt.datetime | None = None) -> tuple[int, int]:
    """Returns (stuck records cleaned, orphan servers stopped)."""
    now = now or dt.datetime.now(dt.UTC)
    deadline = now - dt.timedelta(seconds=runtime.settings.start_timeout_seconds + GRACE_SECONDS)
    stuck = 0
    async for meta in runtime.store.all_hubs_services():
        busy = meta.phase in (Phase.PENDING, Phase.STARTING, Phase.STOPPING)
        if busy and meta.last_update and dt.datetime.fromisoformat(meta.last_update) < deadline:
            await abandon(runtime, meta.id, "The outpost lost track of this server and cleaned it up.")
            log.warning("cleaned up %s, stuck in %s since %s", meta.id, meta.phase.value, meta.last_update)
            stuck += 1
    orphans = 0
    for sid, state in await runtime.backend.running():
        if not await runtime.store.redis.exists(key_record(sid)):
            await runtime.backend.stop(state)
            log.warning("stopped orphan server of %s (no record)", sid)
            orphans += 1
    return stuck, orphans

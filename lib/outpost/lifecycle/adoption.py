"""Re-adopting a running server whose record Redis lost (a failover that dropped the last writes, a volume
gone): its backend keeps its identity, sealed with the Fernet key, next to it (`Backend.remember`), and the
record is rebuilt from that as RUNNING. Never when a stop of it left a tombstone: the hub's DELETE of a
service the outpost does not know, or any stop the outpost did (`outpost.store.keys.FORGET`)."""

from __future__ import annotations

import logging
from typing import Any

from outpost.errors import UndecryptableRecord
from outpost.models import ServiceId
from outpost.runtime import Runtime

log = logging.getLogger(__name__)


async def adopt(runtime: Runtime, sid: ServiceId, state: dict[str, Any]) -> str:
    """Rebuild the record of a running server: "adopted", "exists" (a record is there after all), or why
    not: "stopped" (a tombstone), "no identity" (none kept, or none this outpost's keys can read)."""
    sealed = await runtime.backend.recall(state)
    if not sealed:
        return "no identity"
    try:
        verdict = await runtime.store.adopt(sid, sealed, state)
    except UndecryptableRecord:
        return "no identity"
    if verdict == "adopted":
        log.warning("re-adopted %s: it runs, but its record was lost", sid)
    return verdict


async def readopt(runtime: Runtime, sid: ServiceId) -> bool:
    """A poll found no record. If the server runs (and was not stopped), re-adopt it at once: the hub takes
    a poll's 404 for "stopped", and would then stop it. True when a record is there now. Backends that
    keep no identity are not even asked (listing their servers per unknown poll would cost for nothing)."""
    if not runtime.backend.keeps_identity or await runtime.store.stopped(sid):
        return False
    for found, state in await runtime.backend.running():
        if found == sid:
            return await adopt(runtime, sid, state) in ("adopted", "exists")
    return False

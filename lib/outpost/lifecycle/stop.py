"""Stopping a server: now or in the background, on the hub's request, or on the outpost's own (abandon)."""

from __future__ import annotations

import logging

from prometheus_client import Histogram

from outpost import errors
from outpost.lifecycle import quota
from outpost.lifecycle.notes import callback_notes
from outpost.models import ACTIVE_PHASES, TERMINAL_PHASES, Phase, ServiceId
from outpost.runtime import Runtime

log = logging.getLogger(__name__)
STOP_SECONDS = Histogram("outpost_stop_seconds", "Time to stop a server (backend included)")


async def request_stop(
    runtime: Runtime, sid: ServiceId, *, in_background: bool, collect_logs: bool
) -> list[str] | None:
    """A hub's stop request: the server's last logs when asked for, or None when handed to the background."""
    if await runtime.store.meta(sid) is None:
        await runtime.store.tombstone(sid)  # a server of it found running later is not re-adopted
        raise errors.UnknownService()
    if in_background:
        await runtime.store.transition(sid, Phase.STOPPING, (*ACTIVE_PHASES, *TERMINAL_PHASES))
        await runtime.background.submit("stop", sid)
        return None
    return await _stop(runtime, sid, collect_logs=collect_logs)


async def abandon(runtime: Runtime, sid: ServiceId, message: str) -> None:
    """Give up on a service: stop whatever runs, forget it, and tell the hub the spawn failed."""
    meta = await runtime.store.meta(sid)
    if meta is None:
        return
    body, _, _ = await runtime.store.secrets(sid)
    await stop_if_known(runtime, sid)
    await runtime.hub.progress(body.get("env", {}), sid, 100, message, failed=True)


async def stop_if_known(runtime: Runtime, sid: ServiceId) -> None:
    """A background stop, or the dev server's shutdown; a no-op for a service already gone."""
    if await runtime.store.meta(sid) is not None:
        await _stop(runtime, sid, collect_logs=False)


async def _stop(runtime: Runtime, sid: ServiceId, *, collect_logs: bool) -> list[str]:
    await runtime.store.transition(sid, Phase.STOPPING, (*ACTIVE_PHASES, *TERMINAL_PHASES))
    body, state, _ = await runtime.store.secrets(sid)  # undecryptable: 409, and the record is kept
    logs: list[str] = callback_notes(runtime, sid, body.get("env", {})) if collect_logs else []
    if state is not None:
        logs += await runtime.backend.logs(state) if collect_logs else []
        with STOP_SECONDS.time():
            await runtime.backend.stop(state)
    await runtime.store.forget(sid)
    log.info("stopped %s", sid)
    await quota.send_flavor_update(runtime, sid, body.get("env", {}))
    return logs

"""The timer tick (a Knative PingSource every minute; a local loop in `outpost dev`): stop servers
whose flavor's runtime limit has passed, and tell their hubs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from cloudevents.http import CloudEvent
from redis.exceptions import LockError

from outpost.operations import stop_if_known
from outpost.runtime import Runtime

log = logging.getLogger(__name__)
TICK_LOCK_SECONDS = 55.0


async def expire_services(runtime: Runtime, now: dt.datetime | None = None) -> int:
    """Stop every service past its end date; returns how many this run stopped."""
    lock = runtime.store.lock("tick", TICK_LOCK_SECONDS)
    if not await lock.acquire():
        return 0  # another run is at it
    stopped = 0
    try:
        for meta in await runtime.store.expired(now or dt.datetime.now(dt.UTC)):
            body, _, _ = await runtime.store.secrets(meta.id)
            await stop_if_known(runtime, meta.id)
            message = (
                f"Your server reached the runtime limit of its flavor ({meta.end_date}) and was stopped."
            )
            await runtime.hub.progress(body.get("env", {}), str(meta.id), 100, message, failed=True)
            log.info("stopped %s: runtime limit reached", meta.id)
            stopped += 1
    finally:
        try:
            await lock.release()
        except LockError:
            log.warning("tick outlived its lock")
    return stopped


async def handle_tick(runtime: Runtime, event: CloudEvent) -> None:
    await expire_services(runtime)


async def run_timer(runtime: Runtime, interval_seconds: float) -> None:
    """The local stand-in for the PingSource."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await expire_services(runtime)
        except Exception:
            log.exception("timer tick failed")

"""The timer tick (a Knative PingSource every minute; a local loop in `outpost dev`): stop servers
whose flavor's runtime limit has passed and tell their hubs, then reconcile after crashes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from cloudevents.http import CloudEvent

from outpost.lifecycle import pod_status
from outpost.lifecycle.reconcile import reconcile
from outpost.lifecycle.stop import abandon
from outpost.runtime import Runtime

log = logging.getLogger(__name__)
TICK_LOCK_SECONDS = 55.0


async def expire_services(runtime: Runtime, now: dt.datetime | None = None) -> int:
    """Stop every service past its end date; returns how many this run stopped."""
    stopped = 0
    async with runtime.store.exclusively("expire", TICK_LOCK_SECONDS) as mine:
        if not mine:
            return 0  # another run is at it
        for meta in await runtime.store.expired(now or dt.datetime.now(dt.UTC)):
            message = f"Your server reached the runtime limit of its flavor ({meta.end_date}) and was stopped."
            await abandon(runtime, meta.id, message)
            log.info("stopped %s: runtime limit reached", meta.id)
            stopped += 1
    return stopped


async def tick(runtime: Runtime) -> None:
    await expire_services(runtime)
    await pod_status.resync(runtime)
    async with runtime.store.exclusively("reconcile", TICK_LOCK_SECONDS) as mine:
        if mine:
            await reconcile(runtime)


async def handle_tick(runtime: Runtime, event: CloudEvent) -> None:
    await tick(runtime)


async def run_timer(runtime: Runtime, interval_seconds: float) -> None:
    """The local stand-in for the PingSource."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await tick(runtime)
        except Exception:
            log.exception("timer tick failed")

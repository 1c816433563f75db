"""Background work as CloudEvents: emitted by async starts and stops, handled idempotently (delivery is at
least once).

`Background.submit` runs the handler in this process (`outpost dev`) or posts the event to the
Knative broker (`Settings.events_sink`), whose Trigger delivers it to `start_service_event`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from outpost.errors import EventsUnavailable, InvalidBody
from outpost.lifecycle.start import run_background_start
from outpost.lifecycle.stop import abandon, stop_if_known
from outpost.models import ServiceId
from outpost.runtime import Runtime

log = logging.getLogger(__name__)

EVENT_SOURCE = "/outpost/api"
EVENT_TYPES = {
    "start": "org.jupyterhub.outpost.start.requested",
    "stop": "org.jupyterhub.outpost.stop.requested",
}
MAX_EVENT_AGE = dt.timedelta(hours=1)


def make_event(kind: str, sid: ServiceId) -> CloudEvent:
    # A deterministic id: a client retry of the same request is the same event.
    attributes = {
        "type": EVENT_TYPES[kind],
        "source": EVENT_SOURCE,
        "id": f"{kind}:{sid.hub}:{sid.name}:{sid.start_id}",
    }
    return CloudEvent(attributes, {"hub": sid.hub, "name": sid.name, "start_id": sid.start_id})


def _service_of(event: CloudEvent) -> ServiceId:
    data: Any = event.get_data()
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("hub", "name", "start_id")):
        raise InvalidBody("event data must name hub, name and start_id")
    return ServiceId(data["hub"], data["name"], data["start_id"])


def _too_old(event: CloudEvent) -> bool:
    sent = event.get("time")
    if not sent:
        return False
    try:
        when = dt.datetime.fromisoformat(str(sent).replace("Z", "+00:00"))
    except ValueError:
        return False
    return dt.datetime.now(dt.UTC) - when > MAX_EVENT_AGE


async def handle_event(runtime: Runtime, event: CloudEvent) -> None:
    """Do the work an event asks for; returning acknowledges it, raising asks for a redelivery."""
    kinds = {value: key for key, value in EVENT_TYPES.items()}
    kind = kinds.get(event["type"])
    if kind is None:
        raise InvalidBody(f"unknown event type {event['type']!r}")
    sid = _service_of(event)
    if _too_old(event):
        log.warning("dropping stale %s event for %s", kind, sid)
        return
    marker = f"{event['source']}:{event['id']}"
    if await runtime.store.seen(marker):
        return
    if event.get("knativeerrordest"):
        # The broker gave up on this event: do not leave the hub waiting for a start that never runs.
        log.error("%s event for %s dead-lettered (%s)", kind, sid, event.get("knativeerrorcode"))
        await abandon(runtime, sid, "The outpost could not process the request; please try again.")
    elif kind == "start":
        await run_background_start(runtime, sid)
    else:
        await stop_if_known(runtime, sid)
    await runtime.store.once(marker)


class Background:
    """The entry points' `outpost.runtime.Background`: events handled here, or posted to the sink."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def submit(self, kind: str, sid: ServiceId) -> None:
        event = make_event(kind, sid)
        sink = self._runtime.settings.events_sink
        if sink is None:
            task = asyncio.create_task(self._run_here(event))
            self._runtime.tasks.add(task)
            task.add_done_callback(self._runtime.tasks.discard)
            return
        headers, body = to_structured(event)
        import httpx  # cold start: only a function that posts events loads httpx

        try:
            response = await self._runtime.sink_http.post(sink, headers=headers, content=body)
            response.raise_for_status()
        except httpx.HTTPError:
            raise EventsUnavailable() from None

    async def _run_here(self, event: CloudEvent) -> None:
        try:
            await handle_event(self._runtime, event)
        except Exception:
            log.exception("background %s failed", event["type"])

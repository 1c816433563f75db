"""A pod's status (read by outpost.backends.kubernetes.pods) in Redis, so a poll is one Redis read: pod
events (a Knative ApiServerSource), a resync on the timer's tick for the events that never came, and
the rule by which a poll trusts what was seen.

An event is only a hint: the pod it names is read again and its current state recorded with the time
of that read, so duplicated, reordered and stale events all converge (the store keeps the newest).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from cloudevents.http import CloudEvent

from outpost.backends.kubernetes import manifests
from outpost.backends.kubernetes.pods import PodReader, pod_exit_code
from outpost.errors import InvalidEvent
from outpost.models import Phase, ServiceMeta
from outpost.runtime import Runtime
from outpost.store import PollRecord

log = logging.getLogger(__name__)
RESYNC_LOCK_SECONDS = 55.0
# A record that turned RUNNING this recently may not be in a pod listing taken a moment before.
RESYNC_GRACE_SECONDS = 5.0
# Seen statuses older than this many timer intervals are not trusted: the resync has not run since.
FRESH_TICKS = 2.5


def _pods(runtime: Runtime) -> PodReader | None:
    """The kubernetes backend, if that is the one in use."""
    backend = runtime.backend
    return backend if isinstance(backend, PodReader) else None


def fresh_seconds(runtime: Runtime) -> float:
    return runtime.settings.timer_interval_seconds * FRESH_TICKS


async def cached_poll(runtime: Runtime, meta: ServiceMeta | PollRecord, state: dict[str, Any]) -> int | None:
    """The poll of a RUNNING service: what pod events saw, while fresh; else ask the backend."""
    if meta.observed_at and time.time() - meta.observed_at < fresh_seconds(runtime):
        return meta.observed_exit
    return await runtime.backend.poll(state)


def _reference(event: CloudEvent) -> tuple[str, str] | None:
    """(namespace, name) of the pod an ApiServerSource event is about; Reference mode sends
    {kind, namespace, name}, Resource mode the object itself."""
    data: Any = event.get_data()
    if not isinstance(data, dict):
        raise InvalidEvent("a pod event must carry a JSON object")
    metadata: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else data
    if (data.get("kind") or event.get("kind")) != "Pod":
        return None
    namespace = metadata.get("namespace") or event.get("namespace")
    name = metadata.get("name") or event.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        raise InvalidEvent("a pod event must name the pod and its namespace")
    return namespace, name


async def handle_pod_event(runtime: Runtime, event: CloudEvent) -> None:
    """Record the current status of the pod an event names; pods that are not ours are ignored."""
    pods = _pods(runtime)
    reference = _reference(event)
    if pods is None or reference is None:
        return
    at = time.time()  # taken before the read: a later read always carries a later time
    pod = await pods.read_pod(*reference)
    if pod is None:
        # Gone. Reference mode cannot say whose it was; Resource mode's object can.
        data = event.get_data()
        sid = manifests.service_of(data.get("metadata", {})) if isinstance(data, dict) else None
        if sid is not None:
            await runtime.store.record_observed(sid, 1, at)
        return
    sid = manifests.service_of(pod.get("metadata", {}))
    if sid is None:
        return
    if await runtime.store.record_observed(sid, pod_exit_code(pod), at):
        log.debug("pod %s/%s: status of %s recorded", *reference, sid)


async def resync(runtime: Runtime) -> int:
    """Record every running service's pod status from one listing per namespace; a running service
    without its pod is recorded as stopped. Returns how many statuses were written."""
    pods = _pods(runtime)
    if pods is None:
        return 0
    async with runtime.store.exclusively("resync", RESYNC_LOCK_SECONDS) as mine:
        if not mine:
            return 0
        running: dict[str, list[tuple[ServiceMeta, dict[str, Any]]]] = {}
        async for meta in runtime.store.all_hubs_services():
            if meta.phase != Phase.RUNNING:
                continue
            view = await runtime.store.meta_and_state(meta.id)
            if view is not None and view.state is not None:
                running.setdefault(view.state["namespace"], []).append((view.meta, view.state))
        written = 0
        for namespace, services in running.items():
            at = time.time()
            found = {pod["metadata"]["name"]: pod for pod in await pods.list_pods(namespace)}
            for meta, state in services:
                pod = found.get(state["pod"])
                if pod is not None and manifests.service_of(pod["metadata"]) != meta.id:
                    pod = None  # a pod of that name, but another start's
                if pod is None and _recent(meta, at):
                    continue
                written += await runtime.store.record_observed(meta.id, pod_exit_code(pod), at)
        return written


def _recent(meta: ServiceMeta, at: float) -> bool:
    try:
        changed = dt.datetime.fromisoformat(meta.last_update).timestamp()
    except ValueError:
        return False
    return changed > at - RESYNC_GRACE_SECONDS

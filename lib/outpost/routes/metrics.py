"""Prometheus metrics of the functions: the request metrics, and /metrics (which the public route does not
expose). The start and stop durations are defined where they are measured (`outpost.lifecycle.start`, `.stop`)."""

from __future__ import annotations

import functools

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from outpost.runtime import Runtime
from outpost.store import key_flavor_slots, key_index

REQUESTS = Counter("outpost_requests_total", "API requests by route and status", ["route", "method", "status"])
REQUEST_SECONDS = Histogram("outpost_request_seconds", "API request duration by route", ["route", "method"])


@functools.lru_cache(maxsize=1024)  # labels() validates and locks on every call; the poll path is hot
def request_metrics(route: str, method: str, status: int) -> tuple[Counter, Histogram]:
    """The request counter and duration histogram children of one route, method and status."""
    return REQUESTS.labels(route, method, str(status)), REQUEST_SECONDS.labels(route, method)


SERVICES = Gauge("outpost_services", "Services stored, by hub", ["hub"])
FLAVOR_SLOTS = Gauge("outpost_flavor_in_use", "Services holding a slot of each flavor (all hubs)", ["flavor"])


async def render(runtime: Runtime) -> tuple[bytes, str]:
    """Refresh the gauges that live in Redis (cheap: one SCARD per hub, one GET per flavor), then render."""
    hubs = sorted(runtime.credentials)
    flavors = sorted(runtime.flavor_policy.flavors)
    async with runtime.store.redis.pipeline(transaction=False) as pipe:
        for hub in hubs:
            pipe.scard(key_index(hub))
        for flavor in flavors:
            pipe.get(key_flavor_slots(flavor))
        values = await pipe.execute()
    for hub, count in zip(hubs, values[: len(hubs)], strict=True):
        SERVICES.labels(hub=hub).set(int(count))
    for flavor, count in zip(flavors, values[len(hubs) :], strict=True):
        FLAVOR_SLOTS.labels(flavor=flavor).set(int(count or 0))
    return generate_latest(), CONTENT_TYPE_LATEST

"""Prometheus metrics of the functions: the request metrics, and /metrics (which the public route does not
expose). The start and stop durations are defined where they are measured (`outpost.lifecycle.start`, `.stop`)."""

from __future__ import annotations

import functools

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from outpost.runtime import Runtime

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
    gauges = await runtime.store.gauges(hubs, flavors)
    for hub, count in gauges.services.items():
        SERVICES.labels(hub=hub).set(count)
    for flavor, count in gauges.flavor_slots.items():
        FLAVOR_SLOTS.labels(flavor=flavor).set(count)
    return generate_latest(), CONTENT_TYPE_LATEST

"""Start function: `POST /services`, plus the broker's deliveries of background start/stop events."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.routes import http as api
from outpost.lifecycle import events
from outpost.lifecycle import start as operations

ROUTES = [
    api.Route("POST", "/services", operations.start_service),
    api.Route("GET", "/metrics", operations.metrics_text, public=True),  # not on the public route
]


@functions_framework.aio.http
async def start_service(request: Request) -> Response:
    return await api.dispatch(request, ROUTES)


@functions_framework.aio.http
async def start_service_event(request: Request) -> Response:
    return await api.receive_event(request, events.handle_event)

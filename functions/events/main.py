"""Events function: the broker's deliveries of async start and stop requests (and its dead letters)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.lifecycle.events import handle_event
from outpost.routes.http import receive_event


@functions_framework.aio.http
async def start_service_event(request: Request) -> Response:
    return await receive_event(request, handle_event)

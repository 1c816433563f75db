"""Pod-status function: the ApiServerSource's pod events, recorded so a poll is one Redis read."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.lifecycle.pod_status import handle_pod_event
from outpost.routes.http import receive_event


@functions_framework.aio.http
async def pod_status_event(request: Request) -> Response:
    return await receive_event(request, handle_pod_event)

"""Timer function: the PingSource's tick every minute (runtime limits, pod-status resync, reconciliation)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.lifecycle.timer import handle_tick
from outpost.routes.http import receive_event


@functions_framework.aio.http
async def poll_timer_event(request: Request) -> Response:
    return await receive_event(request, handle_tick)

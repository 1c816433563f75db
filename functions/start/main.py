"""Start function: `POST /services`. An async start is handed to the broker as an event (functions/events)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.lifecycle.events import Background
from outpost.routes import handlers
from outpost.routes.http import Route, dispatch
from outpost.runtime import use_background

use_background(Background)
ROUTES = [
    Route("POST", "/services", handlers.start_service),
    Route("GET", "/metrics", handlers.metrics_text, scraper=True),  # the metrics token only
]


@functions_framework.aio.http
async def start_service(request: Request) -> Response:
    return await dispatch(request, ROUTES)

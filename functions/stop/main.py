"""Stop function: `DELETE /services/{name}/{start_id}` stops a server and forgets it (async: through the broker)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.lifecycle.events import Background
from outpost.routes import handlers
from outpost.routes.http import Route, dispatch
from outpost.runtime import use_background

use_background(Background)
ROUTES = [
    Route("DELETE", "/services/{name}", handlers.stop_service),  # a name, never empty
    Route("DELETE", "/services/{name:segment}/{start_id:segment}", handlers.stop_service),
    Route("GET", "/metrics", handlers.metrics_text, scraper=True),  # the metrics token only
]


@functions_framework.aio.http
async def stop_service(request: Request) -> Response:
    return await dispatch(request, ROUTES)

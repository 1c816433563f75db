"""Stop function: `DELETE /services/{name}/{start_id}` stops a server and forgets it."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.routes import http as api
from outpost.lifecycle import start as operations

ROUTES = [
    api.Route("DELETE", "/services/{name}", operations.stop_service),  # a name, never empty
    api.Route("DELETE", "/services/{name:segment}/{start_id:segment}", operations.stop_service),
    api.Route("GET", "/metrics", operations.metrics_text, public=True),  # not on the public route
]


@functions_framework.aio.http
async def stop_service(request: Request) -> Response:
    return await api.dispatch(request, ROUTES)

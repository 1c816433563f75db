"""Poll function: the hot path (`GET /services/{name}/{start_id}`), listings, flavors, credits and ping."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.routes import handlers
from outpost.routes.http import Route, dispatch

ROUTES = [
    Route("GET", "/ping", handlers.ping, public=True),
    Route("GET", "/openapi.json", handlers.describe_api, public=True),
    Route("GET", "/metrics", handlers.metrics_text, scraper=True),  # the metrics token only
    Route("GET", "/services", handlers.list_services),
    # One segment: a name, never empty (`/services/` is the listing).
    Route("GET", "/services/{name}", handlers.poll_service),
    Route("GET", "/services/{name:segment}/{start_id:segment}", handlers.poll_service),
    Route("GET", "/flavors", handlers.list_flavors),
    Route("POST", "/userflavors", handlers.user_flavors),
    Route("GET", "/credits", handlers.list_credits),
    Route("POST", "/usercredits", handlers.credits_of_user),
]


@functions_framework.aio.http
async def poll_service(request: Request) -> Response:
    return await dispatch(request, ROUTES)

"""Poll function: the hot path (`GET /services/{name}/{start_id}`), listings, flavors, ping and the timer."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from outpost.routes import http as api
from outpost.lifecycle import start as operations
from outpost.lifecycle import pod_status
from outpost.lifecycle import timer

ROUTES = [
    api.Route("GET", "/ping", operations.ping, public=True),
    api.Route("GET", "/openapi.json", operations.describe_api, public=True),
    api.Route("GET", "/metrics", operations.metrics_text, public=True),  # not on the public route
    api.Route("GET", "/services", operations.list_services),
    # One segment: a name, never empty (`/services/` is the listing).
    api.Route("GET", "/services/{name}", operations.poll_service),
    api.Route("GET", "/services/{name:segment}/{start_id:segment}", operations.poll_service),
    api.Route("GET", "/flavors", operations.list_flavors),
    api.Route("POST", "/userflavors", operations.user_flavors),
    api.Route("GET", "/credits", operations.list_credits),
    api.Route("POST", "/usercredits", operations.credits_of_user),
]


@functions_framework.aio.http
async def poll_service(request: Request) -> Response:
    return await api.dispatch(request, ROUTES)


@functions_framework.aio.http
async def poll_timer_event(request: Request) -> Response:
    return await api.receive_event(request, timer.handle_tick)


@functions_framework.aio.http
async def pod_status_event(request: Request) -> Response:
    return await api.receive_event(request, pod_status.handle_pod_event)

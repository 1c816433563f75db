"""Request -> operation -> response, and `error_response`: the only place an exception becomes HTTP."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

import cloudevents.exceptions
from cloudevents.http import CloudEvent, from_http
from pydantic import BaseModel, ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path

from outpost import errors, logs
from outpost.auth import authenticate, authenticate_scraper
from outpost.logs import new_request_id
from outpost.routes.metrics import request_metrics
from outpost.runtime import Runtime, get_runtime
from outpost.store import UNREACHABLE

EventHandler = Callable[[Runtime, CloudEvent], Awaitable[None]]

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)
_DIGITS = re.compile(r"[0-9]+")


class SegmentConvertor(Convertor[str]):
    """One path segment that may be empty: a user's default server has the name ''."""

    regex = "[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", SegmentConvertor())


@dataclass(frozen=True)
class Call:
    """What an operation gets: the authenticated hub, path parameters, query, headers and body."""

    runtime: Runtime
    hub: str
    params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes

    def json_object(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a >4300-digit int
            raise errors.InvalidJSON() from None
        if not isinstance(data, dict):
            raise errors.InvalidBody("request body must be a JSON object")
        return data

    def json(self, model: type[Model]) -> Model:
        data = self.json_object()
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise errors.InvalidBody(_describe(exc)) from None

    @property
    def is_async(self) -> bool:
        return self.headers.get("execution-type", "").lower() == "async"


@dataclass(frozen=True)
class Reply:
    body: Any  # JSON-able, or bytes sent as they are with `media_type`
    status: int = HTTPStatus.OK
    media_type: str = "application/json"

    def response(self) -> Response:
        if isinstance(self.body, bytes):
            return Response(self.body, self.status, media_type=self.media_type)
        return JSONResponse(self.body, status_code=self.status)


Operation = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation: Operation
    public: bool = False  # no credential at all
    scraper: bool = False  # the metrics token (settings.metrics_token), never a hub's password
    pattern: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        regex, _, convertors = compile_path(self.path)
        object.__setattr__(self, "pattern", (regex, convertors))

    def match(self, path: str) -> dict[str, str] | None:
        if "{" not in self.path:  # a fixed path: one comparison (every poll passes the fixed routes first)
            return {} if path == self.path else None
        regex, convertors = self.pattern
        found = regex.fullmatch(path)  # not match(): its "$" also matches before a final newline
        if found is None:
            return None
        return {key: convertors[key].convert(value) for key, value in found.groupdict().items()}


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors())


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared in ("", "0") and "transfer-encoding" not in request.headers:
        return b""  # a poll: nothing to read
    # Only ASCII digits: str.isdigit() also accepts "²", which int() refuses; 19+ digits is over any limit.
    if _DIGITS.fullmatch(declared) and (len(declared) > 18 or int(declared) > limit):
        raise errors.BodyTooLarge(f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.BodyTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def route_path(path: str, base_path: str) -> str:
    """The path routes match: without OUTPOST_BASE_PATH (served with and without it, as upstream
    is); `_find` decides about trailing slashes."""
    if base_path and (path == base_path or path.startswith(base_path + "/")):
        path = path[len(base_path) :]
    return path or "/"


def _find(routes: Sequence[Route], method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The path as sent first: an empty segment is a value (`/services//` asks for name '' and
    start_id '', which no service has). Only a path no route takes is tried without one trailing
    slash, so `/ping/` still answers."""
    for candidate in dict.fromkeys((path, path.removesuffix("/") or "/")):
        path_matched = False
        for route in routes:
            params = route.match(candidate)
            if params is None:
                continue
            if route.method == method:
                return route, params
            path_matched = True
        if path_matched:
            raise errors.MethodNotAllowed(f"{method} is not allowed on {candidate}")
    raise errors.UnknownRoute(f"no route for {method} {path}")


def _source(request: Request, runtime: Runtime) -> str:
    """Who is calling: the socket peer, or the address the trusted proxies vouch for."""
    peer = request.client.host if request.client else "unknown"
    return runtime.proxies.caller(peer, request.headers.getlist("x-forwarded-for"))


def _authorization(request: Request) -> str | None:
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:  # proxies disagree on which one counts: believe neither
        raise errors.Unauthorized("more than one Authorization header")
    return headers[0] if headers else None


async def _authenticate(request: Request, runtime: Runtime, route: Route) -> str:
    """The calling hub ("" for a public route or the scraper's)."""
    if route.public:
        return ""
    source = _source(request, runtime)
    if route.scraper:
        token = runtime.settings.metrics_token
        secret = token.get_secret_value() if token is not None else None
        await authenticate_scraper(_authorization(request), source, secret, runtime.guard)
        return ""
    return await authenticate(_authorization(request), source, runtime.hub_logins, runtime.guard)


async def dispatch(request: Request, routes: Sequence[Route]) -> Response:
    """Serve one request with the first route matching its method and path."""
    started = time.perf_counter()
    rid = new_request_id(request.headers.get("x-request-id"))
    route_label = "unmatched"
    hub = ""
    try:
        runtime = await get_runtime()
        route, params = _find(routes, request.method, route_path(request.scope["path"], runtime.settings.base_path))
        route_label = route.path
        hub = await _authenticate(request, runtime, route)
        body = await _read_body(request, runtime.settings.max_body_bytes)
        call = Call(runtime, hub, params, request.query_params, request.headers, body)
        response = (await route.operation(call)).response()
    except Exception as exc:  # every failure gets a JSON answer; see error_response
        response = error_response(exc)
    response.headers["X-Request-Id"] = rid
    if response.status_code >= HTTPStatus.BAD_REQUEST:
        where = route_label if route_label != "unmatched" else logs.escape(request.scope["path"])
        log.warning(
            "request failed: %d %s %s hub=%s request_id=%s",
            response.status_code, request.method, where, hub or "-", rid,
        )  # fmt: skip
    requests, seconds = request_metrics(route_label, request.method, response.status_code)
    requests.inc()
    seconds.observe(time.perf_counter() - started)
    return response


async def receive_event(request: Request, handler: EventHandler) -> Response:
    """A CloudEvent delivery: an empty 202 acknowledges it (a body would read as a failed reply)."""
    try:
        runtime = await get_runtime()
        body = await _read_body(request, runtime.settings.max_body_bytes)
        await handler(runtime, from_http(dict(request.headers), body))
        return Response(status_code=HTTPStatus.ACCEPTED)
    except Exception as exc:  # a 4xx stops redelivery, a 5xx asks for it
        return error_response(exc)


# Third-party failures that have a meaning for the client.
_FOREIGN: dict[type[BaseException], type[errors.OutpostError]] = {
    cloudevents.exceptions.GenericException: errors.InvalidEvent,
    ClientDisconnect: errors.IncompleteBody,
    **dict.fromkeys(UNREACHABLE, errors.StoreUnavailable),  # incl. a demoted primary, until the client follows
}


def _headers(exc: errors.OutpostError) -> dict[str, str] | None:
    if isinstance(exc, errors.ScraperUnauthorized):
        return {"WWW-Authenticate": 'Bearer realm="metrics"'}
    if isinstance(exc, errors.Unauthorized):
        return {"WWW-Authenticate": 'Basic realm="outpost"'}
    if isinstance(exc, errors.TooManyAttempts):
        return {"Retry-After": str(exc.retry_after)}
    return None


def error_response(exc: BaseException) -> JSONResponse:
    """The one mapping from exceptions to HTTP answers. Unknown errors: a JSON 500, logged."""
    for cls in type(exc).__mro__:
        if cls in _FOREIGN:
            if _FOREIGN[cls] is errors.StoreUnavailable:
                log.warning("store unavailable: %s", type(exc).__name__)
            exc = _FOREIGN[cls]()
            break
    if isinstance(exc, errors.SpawnFailed):
        return JSONResponse(exc.protocol_body(), status_code=exc.status)
    if isinstance(exc, errors.OutpostError) and exc.status < HTTPStatus.INTERNAL_SERVER_ERROR:
        return JSONResponse({"error": type(exc).__name__, "message": exc.message}, exc.status, _headers(exc))
    if isinstance(exc, errors.StoreUnavailable | errors.EventsUnavailable):
        return JSONResponse({"error": type(exc).__name__, "message": exc.message}, exc.status)
    log.error("unexpected error", exc_info=(type(exc), exc, exc.__traceback__))
    message = exc.message if isinstance(exc, errors.ConfigurationError) else "internal error; see the outpost's log"
    return JSONResponse({"error": "InternalError", "message": message}, HTTPStatus.INTERNAL_SERVER_ERROR)

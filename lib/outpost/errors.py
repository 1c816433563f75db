"""The exception tree; `outpost.routes.http.error_response` is the only place these become HTTP.

OutpostError
 ├── ConfigurationError          500  the outpost's own configuration is wrong
 ├── BadRequest                  400  the request cannot be understood
 │    ├── InvalidJSON            400  body is not JSON
 │    ├── InvalidBody            400  JSON of the wrong shape or types
 │    ├── InvalidEvent           400  not a CloudEvent
 │    ├── IncompleteBody         400  the client left before sending the body it announced
 │    └── BodyTooLarge           413  body over the configured limit
 ├── Unauthorized                401  missing or wrong hub credentials
 │    └── ScraperUnauthorized    401  missing or wrong metrics token
 ├── TooManyAttempts             429  too many failed logins from this source or for this hub
 ├── NotFound                    404
 │    ├── UnknownRoute           404  no such path
 │    ├── MetricsOff             404  /metrics without a configured metrics token
 │    └── UnknownService         404  no such service for this hub
 ├── MethodNotAllowed            405
 ├── ServiceExists               409  a start for a service that is already active
 ├── UndecryptableRecord         409  a stored record no configured key can decrypt
 ├── SpawnFailed                 419  the protocol's error body, shown to the user
 │    ├── SpawnRefused           419  a policy refusal (flavor full, over limit, ...)
 │    │    ├── FlavorNotAllowed
 │    │    ├── FlavorFull
 │    │    ├── UserOverLimit
 │    │    ├── OverrideNotAllowed
 │    │    ├── EnvNotAllowed        environment variables the hub may not set
 │    │    ├── TemplateNotAllowed   a `misc` string that is more than text and plain {field} placeholders
 │    │    ├── HostNotAllowed       an address that is not the server's own (kubernetes: its Service)
 │    │    └── AddressTaken         an address another server or process serves (the first owner keeps it)
 │    └── BackendError           419  the backend failed to start/poll/stop a server
 ├── StoreUnavailable            503  Redis cannot be reached
 └── EventsUnavailable           503  the event broker cannot be reached
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

SPAWN_FAILED = 419

__all__ = [
    "SPAWN_FAILED",
    "AddressTaken",
    "BackendError",
    "BadRequest",
    "BodyTooLarge",
    "ConfigurationError",
    "FlavorFull",
    "FlavorNotAllowed",
    "EnvNotAllowed",
    "EventsUnavailable",
    "HostNotAllowed",
    "InvalidBody",
    "InvalidEvent",
    "IncompleteBody",
    "InvalidJSON",
    "MethodNotAllowed",
    "NotFound",
    "OutpostError",
    "OverrideNotAllowed",
    "ServiceExists",
    "shown",
    "SpawnFailed",
    "SpawnRefused",
    "TemplateNotAllowed",
    "TooManyAttempts",
    "StoreUnavailable",
    "Unauthorized",
    "UndecryptableRecord",
    "UnknownRoute",
    "UnknownService",
    "UserOverLimit",
]


def shown(names: list[str], limit: int = 20, length: int = 64) -> str:
    """Hub-chosen names for a refusal message: printable (escaped), each cut short, at most `limit`."""
    parts = [ascii(name[:length])[1:-1] + ("..." if len(name) > length else "") for name in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(parts) + more


# The 419 body's "module": with the trailing dot, as the OutpostSpawner puts it right before the class.
PROTOCOL_MODULE = "outpost.errors."


class OutpostError(Exception):
    """Base class; `message` is safe to show to the hub, so it never holds request data."""

    status: int = HTTPStatus.INTERNAL_SERVER_ERROR
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigurationError(OutpostError):
    """The outpost's settings are invalid; raised at start-up and by `outpost check`."""


class BadRequest(OutpostError):
    """The request cannot be understood."""

    status = HTTPStatus.BAD_REQUEST
    default_message = "bad request"


class InvalidJSON(BadRequest):
    """The body is not valid JSON."""

    default_message = "request body is not valid JSON"


class InvalidBody(BadRequest):
    """The body is JSON of the wrong shape."""


class InvalidEvent(BadRequest):
    """A delivery that is not a valid CloudEvent."""

    default_message = "request is not a valid CloudEvent"


class IncompleteBody(BadRequest):
    """The client closed the connection before sending the body it announced."""

    default_message = "the connection closed before the whole request body arrived"


class BodyTooLarge(BadRequest):
    """The body is larger than `Settings.max_body_bytes`."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    default_message = "request body too large"


class Unauthorized(OutpostError):
    """Missing or wrong Basic credentials."""

    status = HTTPStatus.UNAUTHORIZED
    default_message = "authentication required"


class ScraperUnauthorized(Unauthorized):
    """Missing or wrong `Authorization: Bearer <metrics token>` on /metrics."""

    default_message = "metrics need the metrics token (Authorization: Bearer ...)"


class TooManyAttempts(OutpostError):
    """Too many failed logins; the client should wait `retry_after` seconds."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    default_message = "too many failed logins; try again later"

    def __init__(self, message: str | None = None, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(OutpostError):
    status = HTTPStatus.NOT_FOUND
    default_message = "not found"


class UnknownRoute(NotFound):
    """No function serves this path."""


class MetricsOff(NotFound):
    """No metrics token is configured, so nobody may read /metrics."""

    default_message = "metrics are off: OUTPOST_METRICS_TOKEN is not set"


class UnknownService(NotFound):
    """No service with this name and start_id belongs to the calling hub."""

    default_message = "no such service"


class MethodNotAllowed(OutpostError):
    status = HTTPStatus.METHOD_NOT_ALLOWED
    default_message = "method not allowed"


class ServiceExists(OutpostError):
    """A start for a (name, start_id) that is already starting or running."""

    status = HTTPStatus.CONFLICT
    default_message = "service is already active; stop it first"


class UndecryptableRecord(OutpostError):
    """A stored record that none of the configured Fernet keys can decrypt."""

    status = HTTPStatus.CONFLICT
    default_message = "the stored service record cannot be decrypted with the configured keys"


class SpawnFailed(OutpostError):
    """Answers the protocol's 419, whose `args[0]` the hub shows to the user."""

    status = SPAWN_FAILED
    default_message = "the server could not be started"

    def protocol_body(self) -> dict[str, Any]:
        # The OutpostSpawner shows f"{module}{class}: {args}" to the user, so the pair names one of the
        # classes below, by the module the hub would find it in: a subclass elsewhere (a backend's own
        # error) shows as the public class it derives from, and a module that moves changes nothing.
        public = next(cls for cls in type(self).__mro__ if cls.__module__ == __name__)
        return {
            "module": PROTOCOL_MODULE,
            "class": public.__name__,
            "traceback": "",
            "args": [self.message],
            "kwargs": {},
        }


class SpawnRefused(SpawnFailed):
    """A policy refusal: expected, no traceback, a sentence the user understands."""


class FlavorNotAllowed(SpawnRefused):
    pass


class FlavorFull(SpawnRefused):
    pass


class UserOverLimit(SpawnRefused):
    pass


class OverrideNotAllowed(SpawnRefused):
    pass


class EnvNotAllowed(SpawnRefused):
    """Names only: a refused variable's value may be a secret or an exploit."""


class TemplateNotAllowed(SpawnRefused):
    """A hub's name template with attribute or index access, a conversion or a format spec."""


class HostNotAllowed(SpawnRefused):
    """A server address the backend cannot vouch for as the server it started."""


class AddressTaken(SpawnRefused):
    """The address a server would get is served by someone else: another hub's or user's server, the
    outpost itself, any listener. The message names the address, never who holds it."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"The address {address} is already in use on the outpost. "
            "Start the server without choosing a port, or choose another one."
        )


class BackendError(SpawnFailed):
    """The backend failed; `detail` is a traceback of our code only, never request data."""

    def __init__(self, message: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail

    def protocol_body(self) -> dict[str, Any]:
        return {**super().protocol_body(), "traceback": self.detail}


class StoreUnavailable(OutpostError):
    """Redis cannot be reached; the request can be retried."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "the outpost's state store is unavailable; try again shortly"


class ReplicasBehind(StoreUnavailable):
    """Too few Redis replicas acknowledged a write in time: it could be lost in a failover, so it was
    undone (or is left to the reconciler) and the hub hears 503."""

    default_message = "the outpost's state store could not confirm the change on its replicas; try again shortly"


class EventsUnavailable(OutpostError):
    """The broker did not take a background start or stop; nothing was started."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "the outpost cannot queue background work right now; try again shortly"

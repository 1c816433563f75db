"""The API server's limits before a request reaches the app: connections per source address, and
deadlines for a request's headers and body (the app only ever sees complete headers).

uvicorn has no header or body read timeout and no per-source cap (its `limit_concurrency` answers
503 only once the headers are in, and counts all sources together), so they live in its HTTP
protocol: `limited_protocol(settings)` is the class `uvicorn.Config(http=...)` takes, in `outpost dev`
and, through `outpost.cli.functions_server`, in the functions' containers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from outpost.connlimits import RefusalLog, SourceCounts, source_of
from outpost.proxies import TrustedProxies
from outpost.settings import Settings

__all__ = ["ApiLimits", "LimitedH11Protocol", "limited_protocol"]

log = logging.getLogger(__name__)
Waiting = Literal["headers", "body"]


class ApiLimits:
    """What every connection of one server shares: the settings' limits and the counts per source."""

    def __init__(self, settings: Settings) -> None:
        self.header_timeout = settings.api_header_timeout_seconds
        self.body_timeout = settings.api_body_timeout_seconds
        self.proxies: TrustedProxies = settings.proxies()
        self.sources = SourceCounts(settings.api_max_connections_per_source or None)
        self.log = RefusalLog(log)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a per-source cap at accept and a deadline while the client owes
    the headers (from connecting or from the previous answer) or the body (from its headers)."""

    limits: ClassVar[ApiLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._source: str | None = None  # counted against the per-source cap
        self._waiting: Waiting | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")  # None on a unix socket: nothing to count by
        if peer and not self.limits.proxies.is_proxy(str(peer[0])):  # a proxy carries many clients
            source = source_of(str(peer[0]))
            if not self.limits.sources.claim(source):
                limit = self.limits.sources.limit
                self.limits.log.refused(source, f"already {limit} connections from it (apiMaxConnectionsPerSource)")
                transport.abort()
                return
            self._source = source
        super().connection_made(transport)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._source is not None:
            self.limits.sources.release(self._source)
            self._source = None
        self._wait(None)
        if self.transport is not None:  # None: refused at accept, uvicorn never saw it
            super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def _follow(self) -> None:
        """Arm the deadline for what the client owes now; keep it running while that stays the same."""
        if self.transport is None or self.transport.is_closing():
            self._wait(None)
        elif self.conn.their_state is h11.SEND_BODY:
            self._wait("body")
        elif self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            self._wait("headers")
        else:  # a whole request is in: the app answers it, at its own pace
            self._wait(None)

    def _wait(self, waiting: Waiting | None) -> None:
        if waiting == self._waiting:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._waiting = waiting
        if waiting is not None:
            seconds = self.limits.header_timeout if waiting == "headers" else self.limits.body_timeout
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        seconds = self.limits.header_timeout if self._waiting == "headers" else self.limits.body_timeout
        host = self.client[0] if self.client else "?"
        self.limits.log.refused(source_of(host), f"no complete request {self._waiting} within {seconds:g}s", "closed")
        self._waiting = None
        self.transport.close()


def limited_protocol(settings: Settings) -> type[LimitedH11Protocol]:
    """The protocol class for one server (uvicorn makes one instance per connection)."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"limits": ApiLimits(settings)})

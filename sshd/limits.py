"""Caps: how many connections one authorized key may hold open at once, and how many may be
waiting to authenticate (per source and in all)."""

from __future__ import annotations

import asyncio
import enum
import random
import socket
from collections import defaultdict
from collections.abc import Callable

import asyncssh

from outpost.connlimits import EarlyDrop, RefusalLog, SourceCounts, source_of
from sshd import metrics

__all__ = ["ConnectionCounter", "GatedListener", "StartupRefusal", "Startups"]

# Connections the kernel queues before the daemon accepts them: they cost no descriptor, and a
# flood that fills a short queue would delay the hubs' connects by the SYN retry (a second or more).
BACKLOG = 1024


class ConnectionCounter:
    """Connections per key fingerprint, shared by all connections of one listener.

    A connection claims its key once authenticated and releases it when it closes; `claim` is
    idempotent for a connection that already holds the key.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._holders: defaultdict[str, set[object]] = defaultdict(set)

    def claim(self, fingerprint: str, conn: object) -> bool:
        holders = self._holders[fingerprint]
        if conn in holders:
            return True
        if len(holders) >= self.limit:
            return False
        holders.add(conn)
        return True

    def release(self, fingerprint: str, conn: object) -> None:
        holders = self._holders.get(fingerprint)
        if holders is not None:
            holders.discard(conn)
            if not holders:
                del self._holders[fingerprint]

    def count(self, fingerprint: str) -> int:
        return len(self._holders.get(fingerprint, ()))


class Startups:
    """Connections of one listener that have not authenticated yet (OpenSSH's "startups").

    A connection is admitted when accepted, or refused: over the per-source cap, or by the
    `MaxStartups`-style early drop over all sources, which keeps descriptors for the hubs'
    logins, the forwards and the API. It stops counting once authenticated or closed.
    """

    def __init__(self, per_source: int, early_drop: EarlyDrop, log: RefusalLog) -> None:
        self.early_drop = early_drop
        self._sources = SourceCounts(per_source)
        self._pending: dict[tuple[str, int], str] = {}  # (host, port) of the peer -> its source
        self._log = log
        self._draw = random.SystemRandom().random

    def admit(self, peer: tuple[str, int]) -> bool:
        source = source_of(peer[0])
        if self.early_drop.refuses(len(self._pending), self._draw):
            self._refuse(source, StartupRefusal.FULL, f"{len(self._pending)} connections are not authenticated yet")
            return False
        if not self._sources.claim(source):
            limit = self._sources.limit
            self._refuse(source, StartupRefusal.PER_SOURCE, f"already {limit} unauthenticated connections from it")
            return False
        self._pending[peer] = source
        return True

    def release(self, peer: tuple[str, int]) -> None:
        """The connection authenticated or closed; again for the same peer does nothing."""
        source = self._pending.pop(peer, None)
        if source is not None:
            self._sources.release(source)

    def __len__(self) -> int:
        return len(self._pending)

    def _refuse(self, source: str, reason: StartupRefusal, why: str) -> None:
        metrics.STARTUPS_REFUSED.labels(reason.value).inc()
        self._log.refused(source, f"{why} ({reason.value})")


class StartupRefusal(enum.StrEnum):
    PER_SOURCE = "per-source"
    FULL = "max-startups"


class _Gate(asyncio.Protocol):
    """Decides about one accepted TCP connection before asyncssh sees a byte of it: refused, it is
    closed at once; admitted, asyncssh's connection takes over the transport (this object leaves
    the data path)."""

    def __init__(self, startups: Startups, factory: Callable[[str, int], asyncio.BaseProtocol]) -> None:
        self._startups = startups
        self._factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        host, port = transport.get_extra_info("peername")[:2]
        if not self._startups.admit((host, port)):
            transport.close()
            return
        connection = self._factory("", 0)
        transport.set_protocol(connection)
        connection.connection_made(transport)


class GatedListener(asyncssh.SSHListener):
    """The TCP listener behind `asyncssh.listen(tunnel=GatedListener(...))`: asyncssh hands a
    "tunnel" the factory of its connections, the one hook that runs before the version exchange."""

    def __init__(self, startups: Startups) -> None:
        super().__init__()
        self._startups = startups
        self._server: asyncio.Server | None = None

    async def create_server(
        self, session_factory: Callable[[str, int], asyncio.BaseProtocol], listen_host: str, listen_port: int
    ) -> GatedListener:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Gate(self._startups, session_factory), listen_host or None, listen_port, backlog=BACKLOG
        )
        return self

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    def get_port(self) -> int:
        return int(self.sockets[0].getsockname()[1]) if self.sockets else 0

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

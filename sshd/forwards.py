"""One forward: the two asyncssh forwarders that pump its bytes, counting them, and the log lines of a
connection's forwards, written per destination rather than per channel.

A hub's proxy opens a channel per HTTP connection and websocket, hundreds a second on a busy hub; a log
line each cost the daemon more than the lookup it logs. So a connection writes `forward opened` the first
time it reaches a destination (who reached which service, once), then counts; `forwards` lines sum up
each destination's channels and bytes every `SUMMARY_SECONDS` while it has any, and when the connection
closes. Refusals are logged one by one, elsewhere (`sshd.server`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from asyncssh.forward import SSHForwarder

from outpost.logs import escape
from outpost.store import AddressOwner
from sshd import metrics

__all__ = ["ChannelSide", "Forward", "ForwardLog", "ServiceSide"]

logger = logging.getLogger(__name__)

SUMMARY_SECONDS = 60.0


class Tally:
    """One destination's channels on one connection since its last summary line."""

    __slots__ = ("owner", "dest", "opened", "closed", "open", "up", "down", "since")

    def __init__(self, owner: AddressOwner, dest: str) -> None:
        self.owner = owner
        self.dest = dest
        self.open = 0
        self.since = time.monotonic()
        self.opened = self.closed = self.up = self.down = 0

    @property
    def service(self) -> str:
        """The owner as log lines show it; the hub chose its name and start id."""
        owner = self.owner
        return f"hub={escape(owner.hub)} service={escape(owner.name)}/{escape(owner.start_id)}"


class ForwardLog:
    """The log lines of one SSH connection's forwards (see the module's docstring)."""

    __slots__ = ("peer", "_tallies", "_timer")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._tallies: dict[tuple[AddressOwner, str], Tally] = {}
        self._timer: asyncio.TimerHandle | None = None

    def tally(self, owner: AddressOwner, dest: str) -> Tally:
        """A forward to `dest` opens: the first to it on this connection is logged."""
        tally = self._tallies.get((owner, dest))
        if tally is None:
            tally = self._tallies[owner, dest] = Tally(owner, dest)
            logger.info("forward opened %s dest=%s peer=%s", tally.service, escape(dest), self.peer)
        tally.opened += 1
        tally.open += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SUMMARY_SECONDS, self._periodic)
        return tally

    def _periodic(self) -> None:
        self._timer = None
        if self.flush():  # channels still open: count on
            self._timer = asyncio.get_running_loop().call_later(SUMMARY_SECONDS, self._periodic)

    def flush(self) -> bool:
        """Write a `forwards` line per destination with channels since its last one; forget those with
        none open. True if any channel is still open."""
        now = time.monotonic()
        for key, tally in list(self._tallies.items()):
            if tally.opened or tally.closed:
                logger.info(
                    "forwards %s dest=%s peer=%s opened=%d closed=%d open=%d bytes_up=%d bytes_down=%d over=%.1fs",
                    tally.service, escape(tally.dest), self.peer, tally.opened, tally.closed, tally.open,
                    tally.up, tally.down, now - tally.since,
                )  # fmt: skip
                tally.opened = tally.closed = tally.up = tally.down = 0
                tally.since = now
            elif not tally.open:
                del self._tallies[key]  # idle for a whole period: its next forward is logged as opened again
        return any(tally.open for tally in self._tallies.values())

    def close(self) -> None:
        """The connection closed: what its forwards did since the last summary."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        self._tallies.clear()


class Forward:
    """An allowed forward to `owner`'s service at `dest`: byte counts both ways, added to its connection's
    tally once, whichever side closes first."""

    __slots__ = ("owner", "dest", "up", "down", "open", "_tally", "_on_close")

    def __init__(self, owner: AddressOwner, dest: str, on_close: Callable[[], None]) -> None:
        self.owner = owner
        self.dest = dest
        self.up = 0  # hub -> service
        self.down = 0  # service -> hub
        self.open = False
        self._tally: Tally | None = None
        self._on_close = on_close

    def opened(self, log: ForwardLog) -> None:
        self.open = True
        self._tally = log.tally(self.owner, self.dest)
        metrics.FORWARDS.inc()
        metrics.FORWARDS_OPEN.inc()

    def closed(self) -> None:
        if not self.open:
            return
        self.open = False
        self._on_close()
        metrics.FORWARDS_OPEN.dec()
        metrics.FORWARD_BYTES_UP.inc(self.up)
        metrics.FORWARD_BYTES_DOWN.inc(self.down)
        tally = self._tally
        if tally is not None:
            tally.open -= 1
            tally.closed += 1
            tally.up += self.up
            tally.down += self.down


class _Side(SSHForwarder):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Skips asyncssh's TCP_NODELAY, set already: by the event loop on every TCP transport
        # (asyncio's and uvloop's) and by asyncssh on the SSH socket. On uvloop it builds and
        # drops a socket object per side and forward, three syscalls on every new connection.
        self._transport = cast(asyncio.Transport, transport)


class ChannelSide(_Side):
    """The SSH channel's end (the session asyncssh gets), counting what the hub sends."""

    def __init__(self, forward: Forward, peer: SSHForwarder) -> None:
        super().__init__(peer)
        self._forward = forward

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        self._forward.up += len(data)
        super().data_received(data, datatype)

    def close(self) -> None:
        super().close()
        self._forward.closed()


class ServiceSide(_Side):
    """The TCP connection to the service, counting what it answers."""

    def __init__(self, forward: Forward) -> None:
        super().__init__()
        self._forward = forward

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        self._forward.down += len(data)
        super().data_received(data, datatype)

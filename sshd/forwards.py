"""One forward: the two asyncssh forwarders that pump its bytes, counting them, and its log lines."""

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

__all__ = ["ChannelSide", "Forward", "ServiceSide"]

logger = logging.getLogger(__name__)


class Forward:
    """An allowed forward to `owner`'s service at `dest`: byte counts both ways, and the
    "forward opened" / "forward closed" lines (the latter written once, whichever side closes)."""

    __slots__ = ("owner", "dest", "started", "up", "down", "open", "_on_close")

    def __init__(self, owner: AddressOwner, dest: str, on_close: Callable[[], None]) -> None:
        self.owner = owner
        self.dest = dest
        self.started = time.monotonic()
        self.up = 0  # hub -> service
        self.down = 0  # service -> hub
        self.open = False
        self._on_close = on_close

    @property
    def _service(self) -> str:
        """The owner as log lines show it; the hub chose its name and start id."""
        owner = self.owner
        return f"hub={escape(owner.hub)} service={escape(owner.name)}/{escape(owner.start_id)}"

    def opened(self, peer: str) -> None:
        self.open = True
        metrics.FORWARDS.inc()
        metrics.FORWARDS_OPEN.inc()
        logger.info("forward opened %s dest=%s peer=%s", self._service, escape(self.dest), peer)

    def closed(self) -> None:
        if not self.open:
            return
        self.open = False
        self._on_close()
        metrics.FORWARDS_OPEN.dec()
        metrics.FORWARD_BYTES_UP.inc(self.up)
        metrics.FORWARD_BYTES_DOWN.inc(self.down)
        logger.info(
            "forward closed %s dest=%s bytes_up=%d bytes_down=%d duration=%.3fs",
            self._service, escape(self.dest), self.up, self.down, time.monotonic() - self.started,
        )  # fmt: skip


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

"""Write coalescing for an SSH connection: the packets asyncssh sends during one pass of the event
loop (a channel's EOF and CLOSE, a window adjust and data, ...) leave in one send() instead of one
each. On loopback and in-cluster links a send() costs about as much as encrypting a packet, and it
was the daemon's largest single cost per forwarded connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncssh

__all__ = ["CoalescingTransport", "coalesce_writes"]

logger = logging.getLogger(__name__)


class CoalescingTransport(asyncio.Transport):
    """Buffers `write()`s and hands them to the real transport once per event-loop pass."""

    __slots__ = ("_transport", "_loop", "_pending", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


def coalesce_writes(conn: asyncssh.SSHServerConnection) -> bool:
    """Wrap the transport of a freshly made connection (asyncssh sends every packet through
    `conn._transport.write`, as of 2.24); False, and nothing changed, if that attribute is gone."""
    transport: asyncio.Transport | None = getattr(conn, "_transport", None)
    # No isinstance(asyncio.Transport): uvloop's transports, the ones deployed, do not derive from it.
    if transport is None or isinstance(transport, CoalescingTransport):
        logger.debug("write coalescing not installed: asyncssh internals differ")
        return False
    conn._transport = CoalescingTransport(transport, asyncio.get_running_loop())
    return True

"""Write coalescing: one send() per event-loop pass, in order, nothing lost or sent after abort."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import asyncssh
import pytest
import uvloop

from sshd.coalesce import CoalescingTransport, coalesce_writes


class Recording(asyncio.Transport):
    """The real transport's write side, recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


async def next_pass() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_one_write_per_loop_pass() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"eof")
    transport.write(b"close")
    assert inner.writes == [] and transport.get_write_buffer_size() == 8
    await next_pass()
    assert inner.writes == [b"eofclose"]
    transport.write(b"data")
    await next_pass()
    assert inner.writes == [b"eofclose", b"data"]


@pytest.mark.asyncio
async def test_close_flushes_and_abort_drops() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"disconnect")
    transport.close()
    assert inner.writes == [b"disconnect"] and inner.closed

    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"never")
    transport.abort()
    await next_pass()
    assert inner.writes == [] and inner.aborted


def test_installed_on_uvloop_transports() -> None:
    """The deployed daemon runs on uvloop, whose transports do not derive from asyncio.Transport."""

    async def wrap_a_uvloop_transport() -> None:
        server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", port)
        assert not isinstance(transport, asyncio.Transport)
        conn = SimpleNamespace(_transport=transport)
        assert coalesce_writes(cast(asyncssh.SSHServerConnection, conn))
        assert isinstance(conn._transport, CoalescingTransport)
        assert not coalesce_writes(cast(asyncssh.SSHServerConnection, conn))  # wrapped once only
        transport.close()
        server.close()
        await server.wait_closed()

    uvloop.run(wrap_a_uvloop_transport())

"""Write coalescing: one send() per event-loop pass, in order, nothing lost or sent after abort."""

from __future__ import annotations

import asyncio

import pytest

from sshd.coalesce import CoalescingTransport


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

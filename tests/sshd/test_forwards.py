"""The service side of a forward on both event loops: connected, and TCP_NODELAY set."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from outpost.models import Phase
from outpost.store import AddressOwner
from sshd.forwards import Forward, ServiceSide


async def connect_service_side() -> tuple[int, bytes]:
    """TCP_NODELAY of the service side's socket, and what the service got from a write."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.readexactly(4))
        writer.close()

    server = await asyncio.start_server(service, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    forward = Forward(AddressOwner("a", "lab", "1", Phase.RUNNING), f"127.0.0.1:{port}", lambda: None)
    transport, side = await asyncio.get_running_loop().create_connection(
        lambda: ServiceSide(forward), "127.0.0.1", port
    )
    try:
        nodelay = transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        side.write(b"ping")
        return nodelay, await asyncio.wait_for(received, 5)
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_service_side_is_connected_without_delay(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    nodelay, received = run(connect_service_side())
    assert nodelay != 0
    assert received == b"ping"

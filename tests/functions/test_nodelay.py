"""Every function, served as deployed (the functions-framework CLI: gunicorn with a uvicorn worker),
sends its answers at once on a kept-alive connection: TCP_NODELAY on the connections it accepts.
Without it, a body written after its headers waits for the client's delayed ACK (40 ms on Linux)."""

from __future__ import annotations

import pytest

from outpost.settings import Settings
from tests.conftest import function_process
from tests.support.server_socket import accepted_nodelay

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    "function, target",
    [
        ("poll", "poll_service"),
        ("start", "start_service"),
        ("stop", "stop_service"),
        ("events", "start_service_event"),
        ("pod_status", "pod_status_event"),
        ("timer", "poll_timer_event"),
    ],
)
async def test_accepted_connections_are_nodelay(settings: Settings, function: str, target: str) -> None:
    async with function_process(function, target, settings) as (process, client):
        port = client.base_url.port
        assert port is not None
        assert accepted_nodelay(process.pid, port)

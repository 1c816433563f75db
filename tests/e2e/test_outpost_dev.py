"""`outpost dev` as a process: Ctrl-C stops every server it started, and nothing outlives it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TINY_SERVER, start_body
from tests.e2e import harness

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "group",
    [
        pytest.param(False, id="sigint-to-outpost"),
        pytest.param(True, id="ctrl-c-to-process-group"),  # a terminal signals the whole group
    ],
)
def test_interrupt_stops_every_server(tmp_path: Path, group: bool) -> None:
    """Two running servers (one default, one named), then SIGINT: all gone, clean exit."""
    outpost = harness.start_outpost(tmp_path, f"ctrl-c-{tmp_path.name}", config=harness.outpost_values(tmp_path))
    addresses = []
    try:
        with outpost.client() as api:
            for name in ("", "second"):
                body = start_body(name=name, start_id="1", user="erin")
                body["misc"]["cmd"] = [sys.executable, str(TINY_SERVER)]
                response = api.post("/services", json=body)
                assert response.status_code == 200, response.text
                addresses.append(response.json()["service"])
        for address in addresses:
            assert httpx.get(address, timeout=5).json()["user"] == "erin"
    except BaseException:
        outpost.proc.stop(signal.SIGKILL)
        raise
    code = outpost.proc.stop(signal.SIGINT, group=group)  # raises on any process left behind
    assert code in (0, 130, -signal.SIGINT), outpost.proc.tail()
    assert "stopped 2 server(s)" in outpost.proc.text(), outpost.proc.tail()
    assert "Traceback" not in outpost.proc.text(), outpost.proc.tail()

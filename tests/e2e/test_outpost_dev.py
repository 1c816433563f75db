"""`outpost dev` as a process: any stop signal stops every server it started, and nothing outlives it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TINY_SERVER, start_body
from tests.e2e import harness

pytestmark = pytest.mark.e2e


def start_tiny_servers(outpost: harness.Outpost, names: tuple[str, ...]) -> list[str]:
    """Start the tiny stand-in server under each name (user erin, start_id 1); return their addresses."""
    addresses = []
    with outpost.client() as api:
        for name in names:
            body = start_body(name=name, start_id="1", user="erin")
            body["misc"]["cmd"] = [sys.executable, str(TINY_SERVER)]
            response = api.post("/services", json=body)
            assert response.status_code == 200, response.text
            addresses.append(response.json()["service"])
    for address in addresses:
        assert httpx.get(address, timeout=5).json()["user"] == "erin"
    return addresses


@pytest.mark.parametrize(
    "sig, group",
    [
        pytest.param(signal.SIGINT, False, id="sigint-to-outpost"),
        pytest.param(signal.SIGINT, True, id="ctrl-c-to-process-group"),  # a terminal signals the whole group
        pytest.param(signal.SIGTERM, False, id="sigterm"),  # kill, timeout, docker stop, systemd
        pytest.param(signal.SIGHUP, False, id="sighup"),  # the terminal went away
    ],
)
def test_signal_stops_every_server(tmp_path: Path, sig: signal.Signals, group: bool) -> None:
    """Two running servers (one default, one named), then the signal: all gone, 'bye', exit 0."""
    outpost = harness.start_outpost(tmp_path, f"signal-{tmp_path.name}")
    try:
        start_tiny_servers(outpost, ("", "second"))
    except BaseException:
        outpost.proc.stop(signal.SIGKILL)
        raise
    code = outpost.proc.stop(sig, group=group)  # raises on any process left behind
    text = outpost.proc.text()
    assert code == 0, outpost.proc.tail()
    assert "stopped 2 server(s)" in text and text.rstrip().endswith("bye"), outpost.proc.tail()
    assert "Traceback" not in text, outpost.proc.tail()
    assert not (outpost.data_dir / "redis" / "redis.sock").exists()  # Redis stopped, not killed


def test_keep_servers_leaves_them_for_the_next_start(tmp_path: Path) -> None:
    """--keep-servers: SIGTERM keeps the server running; the next start adopts it (poll, then stop)."""
    first = harness.start_outpost(tmp_path, f"keep-{tmp_path.name}", extra_args=["--keep-servers"])
    try:
        (address,) = start_tiny_servers(first, ("",))
        code = first.proc.popen.send_signal(signal.SIGTERM) or first.proc.popen.wait(timeout=30)
        assert code == 0 and "kept 1 server(s) running" in first.proc.text(), first.proc.tail()
        assert httpx.get(address, timeout=5).json()["user"] == "erin"
    except BaseException:
        first.proc.stop(signal.SIGKILL)
        raise
    second = harness.restart_outpost(tmp_path, first)
    with second.client() as api:
        assert api.get("/services//1").json() == {"status": None}
        assert api.delete("/services//1").status_code == 200
    assert second.proc.stop(signal.SIGTERM) == 0  # and nothing is left behind

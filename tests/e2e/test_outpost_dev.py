"""`outpost dev` as a process: any stop signal stops every server it started, and nothing outlives it."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TINY_SERVER, start_body
from tests.e2e import harness
from tests.e2e.processes import wait_until
from tests.support.server_socket import accepted_nodelay

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
    outpost = harness.start_outpost(tmp_path, f"signal-{tmp_path.name}", config=harness.outpost_values(tmp_path))
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
    first = harness.start_outpost(
        tmp_path, f"keep-{tmp_path.name}", config=harness.outpost_values(tmp_path), extra_args=["--keep-servers"]
    )
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


def test_second_signal_forces_and_the_next_start_adopts_what_was_left(tmp_path: Path) -> None:
    """A server that ignores SIGTERM holds up the stop; a second SIGTERM ends outpost dev at once (143),
    saying so, and leaves that server running; the next start still knows its record and stops it."""
    first = harness.start_outpost(
        tmp_path,
        f"force-{tmp_path.name}",
        config=harness.outpost_values(tmp_path, [*harness.OVERRIDES_WITH_CMD, "stop_timeout"]),
    )
    try:
        with first.client() as api:
            body = start_body(name="stubborn", start_id="1", user="erin")
            body["misc"]["cmd"] = ["sh", "-c", f"trap '' TERM; exec {sys.executable} {TINY_SERVER}"]
            body["misc"]["stop_timeout"] = 60.0  # SIGKILL only after a minute
            response = api.post("/services", json=body)
            assert response.status_code == 200, response.text
        first.proc.popen.send_signal(signal.SIGTERM)
        wait_until("outpost dev to stop its servers", lambda: "SSH daemon stopped" in first.proc.text(), timeout=20)
        first.proc.popen.send_signal(signal.SIGTERM)
        assert first.proc.popen.wait(timeout=20) == 128 + signal.SIGTERM, first.proc.tail()
    except BaseException:
        first.proc.stop(signal.SIGKILL)
        raise
    text = first.proc.text()
    assert "SIGTERM again: stopping now" in text and "forced:" in text and "bye" in text, first.proc.tail()
    assert httpx.get(response.json()["service"], timeout=5).json()["user"] == "erin"  # left running
    # Its sh wrapper took the first SIGTERM and is gone, and a stop that finds no wrapper does not yet
    # look for the rest of the group (the local backend's process-group identity is another change):
    # end the server here, so this test checks the signals and the record, not that.
    (state_file,) = (first.data_dir / "servers").glob("*/server.json")
    os.killpg(json.loads(state_file.read_text())["pid"], signal.SIGKILL)
    second = harness.restart_outpost(tmp_path, first)
    with second.client() as api:
        assert api.get("/services/stubborn/1").status_code == 200  # the record survived the forced exit
    harness.stop_outpost(second)  # and checks that nothing is left
    assert "stopped 1 server(s)" in second.proc.text()


def test_api_connections_are_nodelay(tmp_path: Path) -> None:
    """The API answers at once on a kept-alive connection: `outpost dev` binds its socket itself, and
    asyncio sets TCP_NODELAY only on sockets made with IPPROTO_TCP, so the listener carries it (a body
    written after its headers would otherwise wait 40 ms for the client's delayed ACK)."""
    outpost = harness.start_outpost(tmp_path, f"nodelay-{tmp_path.name}")
    try:
        assert accepted_nodelay(outpost.proc.pid, outpost.api_port)
    finally:
        harness.stop_outpost(outpost)

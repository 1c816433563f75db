"""End to end with the real client: JupyterHub + OutpostSpawner -> `outpost dev` -> jupyterhub-singleuser.

The hub reaches the returned address directly (`ssh_during_startup` off, `svc_create` off).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import statistics
import time

import httpx
import pytest

from tests.e2e.harness import HUB_CREDENTIAL, Hub, Outpost
from tests.e2e.processes import progress, wait_until

pytestmark = pytest.mark.e2e


def listed(outpost: Outpost, name: str) -> list[dict[str, object]]:
    return [s for s in outpost.services() if s["name"] == name]


def assert_status_from_singleuser(response: httpx.Response) -> None:
    """A 200 from jupyter_server's /api/status (not a hub page or a proxy error)."""
    assert response.status_code == 200, f"{response.status_code}: {response.text[:300]}"
    status = response.json()
    assert {"started", "last_activity", "kernels", "connections"} <= status.keys(), status


def poll_latency(outpost: Outpost, name: str, start_id: str, *, keep_alive: bool, rounds: int = 30) -> str:
    """`GET /services/<name>/<start_id>` against the outpost: p50 and max over `rounds` polls, on one
    kept-alive connection or on a new connection each time (as tornado's simple client does)."""
    timings = []
    with outpost.client() as api:
        for _ in range(rounds):
            began = time.perf_counter()
            if keep_alive:
                response = api.get(f"/services/{name}/{start_id}")
                status, body = response.status_code, response.text
            else:  # http.client: a bare connection, so the client's own set-up is not measured
                connection = http.client.HTTPConnection("127.0.0.1", outpost.api_port, timeout=10)
                connection.request("GET", f"/services/{name}/{start_id}", headers=outpost.auth)
                reply = connection.getresponse()
                status, body = reply.status, reply.read().decode()
                connection.close()
            timings.append(time.perf_counter() - began)
            assert status == 200 and json.loads(body) == {"status": None}, body
    return f"p50 {statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms ({rounds} polls)"


def test_default_and_named_server_through_the_proxy(hub: Hub, outpost: Outpost) -> None:
    """Start, reach through the proxy, poll, and stop a default and a named server."""
    user = "alice"
    hub.create_user(user)

    ready_default = hub.start(user)
    progress(f"MEASURED start-to-ready (default server, sync): {ready_default:.2f}s")
    assert_status_from_singleuser(hub.proxied(user, "", "api/status"))

    [default] = listed(outpost, "")  # the default server's empty name, served by the outpost
    assert default["jupyterhub"] == HUB_CREDENTIAL and default["start_pending"] is False
    start_id = str(default["start_id"])
    state = (hub.server(user) or {})["state"]
    assert isinstance(state, dict) and state["start_id"] == start_id
    port = int(state["custom_port"])  # the hub told the outpost to use this port (misc)
    events = [str(e.get("message", "")) for e in hub.events(user)]
    assert "Start request received by the outpost" in events and "Server is ready" in events, events

    ready_named = hub.start(user, "named")
    progress(f"MEASURED start-to-ready (named server, sync): {ready_named:.2f}s")
    assert_status_from_singleuser(hub.proxied(user, "named", "api/status"))
    assert len(listed(outpost, "named")) == 1

    for keep_alive in (True, False):
        timing = poll_latency(outpost, "", start_id, keep_alive=keep_alive)
        connection = "kept-alive connection" if keep_alive else "new connection each"
        progress(f"MEASURED poll latency GET /services//<start_id> ({connection}): {timing}")
    # The hub's own polls of the empty-named default server (`/services//<start_id>`) keep it running:
    # after the second poll is logged, the answer to the first one has been acted on.
    poll_line = f"Communicated poll with Outpost service ( {outpost.request_url}//{start_id} )"
    wait_until("two polls of the default server by the hub", lambda: hub.proc.text().count(poll_line) >= 2, 15)
    client_side = [
        float(m) for m in re.findall(re.escape(poll_line) + r" \(request duration: ([0-9.]+)\)", hub.proc.text())
    ]
    seen = ", ".join(f"{t * 1000:.1f} ms" for t in client_side)
    progress(f"MEASURED poll latency as the hub's OutpostSpawner saw it: {seen}")
    assert (hub.server(user) or {})["ready"] is True

    hub.stop(user)
    hub.stop(user, "named")
    assert listed(outpost, "") == [] and listed(outpost, "named") == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the notebook server process is gone
    assert hub.proxied(user, "", "api/status").status_code != 200


def test_failed_start_is_reported_and_leaves_nothing(hub: Hub, outpost: Outpost) -> None:
    """A server that exits before it is ready: the outpost's 419 reaches the hub's events, nothing is left."""
    user = "bob"
    hub.create_user(user)
    response = hub.request_start(user, "broken")
    assert response.status_code >= 400 or response.status_code == 202, response.text

    def failed_event() -> dict[str, object] | None:
        events = hub.events(user, "broken")
        return next((e for e in events if e.get("failed")), None)

    event = wait_until("a failed event for bob/broken", failed_event, timeout=30)
    assert event is not None and "exited with code 3" in str(event.get("html_message")), event
    wait_until("bob/broken to be neither running nor pending", lambda: hub.server(user, "broken") is None, 30)
    assert listed(outpost, "broken") == []

"""End to end with `c.OutpostSpawner.start_async = True`: the outpost answers 202 at once, starts the
server in the background, then delivers the address through the hub's setup-tunnel API (or a
`failed` event, which makes the hub give up at once instead of after its http_timeout)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Hub, Outpost
from tests.e2e.processes import progress, wait_until

pytestmark = pytest.mark.e2e

HTTP_TIMEOUT = 30  # c.Spawner.http_timeout of the generated hub config


@pytest.fixture(scope="module")
def tunnel_log(e2e_dir: Path) -> Path:
    return e2e_dir / "setup-tunnel-calls.jsonl"


@pytest.fixture(scope="module")
def hub_extra_config(tunnel_log: Path) -> str:
    # In 2.2.x an async start makes the hub wait at http://<svc_name>:<port> (its "case 3") and
    # the setup-tunnel call runs the tunnel hook. Hub and server share this machine, and the server
    # listens on the port the hub chose (misc "port"), so the hub reaches it directly at 127.0.0.1;
    # the hook only records what the outpost delivered.
    return f"""
import json
c.OutpostSpawner.start_async = True
c.OutpostSpawner.svc_name_template = "127.0.0.1"

async def _record_tunnel(spawner, port_forward_info):
    call = {{"server": f"{{spawner.user.name}}/{{spawner.name}}", "info": port_forward_info}}
    with open({str(tunnel_log)!r}, "a") as calls:
        calls.write(json.dumps(call) + "\\n")

c.OutpostSpawner.ssh_custom_forward = _record_tunnel
"""


def tunnel_calls(tunnel_log: Path, server: str) -> list[dict[str, str]]:
    if not tunnel_log.exists():
        return []
    calls = [json.loads(line) for line in tunnel_log.read_text().splitlines()]
    return [c["info"] for c in calls if c["server"] == server]


def test_async_start_delivers_the_address_through_setup_tunnel(hub: Hub, outpost: Outpost, tunnel_log: Path) -> None:
    """202 at once; the server starts in the background; one setup-tunnel call carries its address."""
    user = "carol"
    hub.create_user(user)

    ready = hub.start(user)
    progress(f"MEASURED start-to-ready (default server, async): {ready:.2f}s")
    assert "e2ehub/<default>/" in outpost.proc.text() and "(async)" in outpost.proc.text()

    response = hub.proxied(user, "", "api/status")
    assert response.status_code == 200 and "kernels" in response.json(), response.text
    state = (hub.server(user) or {})["state"]
    assert isinstance(state, dict)
    # Exactly one setup-tunnel call, from the outpost, with the address the server listens on.
    assert tunnel_calls(tunnel_log, f"{user}/") == [{"service": f"http://127.0.0.1:{state['custom_port']}"}]
    messages = [str(e.get("message", "")) for e in hub.events(user)]
    assert "Server is ready" in messages, messages
    [record] = [s for s in outpost.services() if s["name"] == ""]
    assert record["start_pending"] is False and record["start_id"] == state["start_id"]

    hub.stop(user)
    assert [s for s in outpost.services() if s["name"] == ""] == []


def test_async_start_failure_cancels_the_spawn_at_once(hub: Hub, outpost: Outpost, tunnel_log: Path) -> None:
    """A background start that fails sends a `failed` event: the hub gives up long before its timeout."""
    user = "dave"
    hub.create_user(user)
    began = time.monotonic()
    response = hub.request_start(user, "broken")
    assert response.status_code in (202, 419, 500), response.text

    failed = "APICall: SpawnUpdate - Start failed: the server exited with code 3 before it was ready"
    wait_until("the outpost's failed event in the hub's log", lambda: failed in hub.proc.text(), timeout=20)
    wait_until(f"{user}/broken to be neither running nor pending", lambda: hub.server(user, "broken") is None, 20)
    elapsed = time.monotonic() - began
    progress(f"MEASURED async failure: the hub gave up after {elapsed:.2f}s (http_timeout {HTTP_TIMEOUT}s)")
    assert elapsed < HTTP_TIMEOUT / 2
    assert tunnel_calls(tunnel_log, f"{user}/broken") == []
    assert [s for s in outpost.services() if s["name"] == "broken"] == []

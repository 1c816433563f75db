"""A hub that tunnels through our SSH daemon, as the snippet `outpost dev` prints configures it: six first
starts at once on a fresh hub (no ControlMaster yet) all succeed over one SSH connection, and code runs in
a kernel of a real jupyterhub-singleuser over websockets through the hub's proxy and the tunnel.

The six run the tiny stand-in server, which starts at once: their forwards then run at the same moment, as
at the beginning of a class (six jupyterhub-singleuser on two shared cores get ready seconds apart, and
their forwards did not overlap). Without the snippet's lines the hub opened six connections."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.conftest import TINY_SERVER
from tests.e2e import harness
from tests.e2e.harness import HUB_CREDENTIAL, Hub, Outpost, SSHClientFiles
from tests.e2e.processes import progress, wait_until

pytestmark = pytest.mark.e2e

USERS = [f"class{i}" for i in range(6)]


@pytest.fixture(scope="module")
def outpost_config(e2e_dir: Path, ssh_files: SSHClientFiles) -> Path:
    return harness.outpost_values(e2e_dir, sshPublicKeys=[{"hub": HUB_CREDENTIAL, "key": ssh_files.public}])


# Servers starting at once on two shared cores take longer than one: room for them, never a bound. The six
# users' servers are the tiny stand-in.
SIX_AT_ONCE = f"""
c.OutpostSpawner.request_kwargs = {{"request_timeout": 300}}
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120
c.OutpostSpawner.custom_misc = lambda spawner, user_options: (
    {{"cmd": [{sys.executable!r}, {str(TINY_SERVER)!r}]}} if spawner.user.name.startswith("class") else {{}}
)
"""


@pytest.fixture(scope="module")
def hub_extra_config(ssh_files: SSHClientFiles, outpost: Outpost) -> str:
    """The snippet's SSH variant through outpost dev's daemon, with its "one forward at a time" lines."""
    tunnelled = harness.tunnelled_hub_config(ssh_files, outpost.ssh_port)
    return tunnelled + harness.snippet_forward_lock(outpost) + SIX_AT_ONCE


@pytest.fixture(scope="module", autouse=True)
def close_masters(hub: Hub, ssh_files: SSHClientFiles) -> Iterator[None]:
    """Torn down before the hub, so the hub's orphan check sees no ssh master left."""
    yield
    ssh_files.exit_masters()


def hub_connections(ssh_files: SSHClientFiles) -> list[str]:
    """The hub's ssh processes that hold a connection (not the short-lived `-O` commands)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ssh ") and str(ssh_files.dir) in cmdline and " -O " not in cmdline:
            found.append(cmdline)
    return found


def reaches_server(hub: Hub, user: str) -> bool:
    """Whether the user's own server answers through the hub's proxy and the tunnel."""
    response = hub.proxied(user, "", "api/status")
    return response.status_code == 200 and response.json().get("user") == user


def test_six_first_starts_at_once_share_one_connection(hub: Hub, outpost: Outpost, ssh_files: SSHClientFiles) -> None:
    """Six users start at the same moment on a hub with no ControlMaster: every start succeeds, every server
    answers through the proxy and its tunnel, and the hub holds one SSH connection to the daemon."""
    assert not ssh_files.masters()
    for user in USERS:
        hub.create_user(user)
    with ThreadPoolExecutor(len(USERS)) as pool:
        answers = list(pool.map(hub.request_start, USERS))
    assert all(a.status_code in (201, 202) for a in answers), [a.text for a in answers]

    def all_ready() -> bool:
        hub.proc.check_alive()
        servers = [hub.server(user) for user in USERS]
        failed = [user for user, server in zip(USERS, servers, strict=True) if server is None]
        assert not failed, f"the starts of {failed} failed:\n{hub.proc.tail()}"
        return all(server is not None and server["ready"] for server in servers)

    wait_until("six servers ready in the hub", all_ready, timeout=420, interval=0.5)
    for user in USERS:
        assert reaches_server(hub, user)
    assert "Could not create ssh connection" not in hub.proc.text()
    connections = hub_connections(ssh_files)
    progress(f"MEASURED six first starts at once: hub ssh connections {len(connections)}")
    assert len(connections) == 1, connections
    assert "disabling multiplexing" not in hub.proc.text()


async def execute(ws_url: str, token: str, code: str) -> tuple[list[str], str, list[str]]:
    """Run `code` in the kernel behind `ws_url`: (stdout texts, the reply's status, the kernel's states)."""
    request = HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})
    connection = await websocket_connect(request)
    msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
    header = {"msg_id": msg_id, "username": "e2e", "session": session, "msg_type": "execute_request", "version": "5.3"}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    message: dict[str, Any] = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
    await connection.write_message(json.dumps({**message, "channel": "shell", "buffers": []}))
    stdout: list[str] = []
    states: list[str] = []
    status = ""
    while not status or "idle" not in states:
        raw = await asyncio.wait_for(connection.read_message(), 60)
        assert raw is not None, "the kernel's websocket closed"
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = reply["header"]["msg_type"]
        if kind == "stream" and reply["content"]["name"] == "stdout":
            stdout.append(reply["content"]["text"])
        elif kind == "status":
            states.append(reply["content"]["execution_state"])
        elif kind == "execute_reply":
            status = reply["content"]["status"]
    connection.close()
    return stdout, status, states


def test_code_runs_in_a_kernel_over_websockets_through_the_tunnel(hub: Hub, outpost: Outpost) -> None:
    """A kernel started through the proxy runs code sent over its websocket; the websocket is a forward of
    our daemon's to the server."""
    user = "kernel"
    hub.create_user(user)
    hub.start(user, timeout=300)
    prefix = f"{hub.url}/user/{user}"
    with httpx.Client(headers=hub.auth, timeout=120) as http:
        started = http.post(f"{prefix}/api/kernels", json={"name": "python3"})
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    ws_url = f"{prefix.replace('http://', 'ws://')}/api/kernels/{kernel}/channels"
    # The proxy's route is the hub's end of the SSH forward; the server listens elsewhere: only the tunnel
    # joins them (and a proxy may carry the websocket on a connection it keeps, so no new forward is logged).
    state = (hub.server(user) or {})["state"]
    assert isinstance(state, dict)
    server_address = str(state["port_forward_info"]["service"]).removeprefix("http://")
    assert f"dest={server_address} " in outpost.proc.text()
    assert server_address != f"127.0.0.1:{state['custom_port']}"

    began = time.perf_counter()
    stdout, status, states = asyncio.run(execute(ws_url, hub.token, "import os\nprint(6 * 7, os.getpid() > 0)"))
    progress(f"MEASURED kernel execution over a new websocket through the tunnel: {time.perf_counter() - began:.3f}s")

    assert status == "ok" and "".join(stdout) == "42 True\n", (status, stdout)
    assert states[0] == "busy" and states[-1] == "idle", states
    with httpx.Client(headers=hub.auth, timeout=60) as http:
        assert http.delete(f"{prefix}/api/kernels/{kernel}").status_code == 204

"""`outpost dev`'s local servers as a newcomer meets them: the default command without an activated venv, and
a server whose wrapper process was killed (kill -9) is still a running server, which stop ends for good."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import start_body
from tests.e2e import harness
from tests.e2e.processes import VENV_BIN, group_members, marked_processes, wait_until
from tests.e2e.test_outpost_dev import start_tiny_servers

pytestmark = pytest.mark.e2e


class _HubAPI(BaseHTTPRequestHandler):
    """What jupyterhub-singleuser asks of its hub before it listens: any answer with the hub's version."""

    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("X-JupyterHub-Version", "5.0.0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer  # noqa: N815 (http.server's naming)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hub_api() -> Iterator[str]:
    """The URL of a stand-in hub that answers every request."""
    with ThreadingHTTPServer(("127.0.0.1", 0), _HubAPI) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


def path_without_the_venv() -> str:
    """The test's PATH without the venv's bin, as in a shell where the venv was never activated."""
    entries = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return os.pathsep.join(entry for entry in entries if entry and Path(entry).resolve() != VENV_BIN.resolve())


def test_default_command_runs_without_an_activated_venv(tmp_path: Path, hub_api: str) -> None:
    """`.venv/bin/outpost dev` with the venv's bin off PATH: the default jupyterhub-singleuser still starts
    (as root, as root with --allow-root, since no unprivileged uid can run the venv's interpreter under /root)."""
    search_path = path_without_the_venv()
    assert shutil.which("jupyterhub-singleuser", path=search_path) is None, "jupyterhub-singleuser is on PATH"
    outpost = harness.start_outpost(tmp_path, f"novenv-{tmp_path.name}", extra_env={"PATH": search_path})
    try:
        with outpost.client() as api:
            response = api.post("/services", json=start_body(name="first", user="erin", hub_url=hub_api))
            assert response.status_code == 200, response.text
            address = response.json()["service"]
            about = httpx.get(f"{address}/user/erin/first/api", timeout=10)
            assert about.status_code == 200 and "version" in about.json(), about.text  # jupyter_server's answer
            assert api.delete("/services/first/1").status_code == 200
    finally:
        harness.stop_outpost(outpost)


def test_killing_a_servers_wrapper_orphans_nothing(tmp_path: Path) -> None:
    """kill -9 of the `sh` wrapper alone: the server still polls as running, and stop ends its whole group."""
    outpost = harness.start_outpost(tmp_path, f"orphan-{tmp_path.name}", config=harness.outpost_values(tmp_path))
    try:
        [address] = start_tiny_servers(outpost, ("srv",))
        [wrapper] = [p for p in outpost.proc.descendants() if p.cmdline()[:2] == ["/bin/sh", "-c"]]
        wrapper.kill()
        wait_until("the wrapper's end", lambda: not psutil.pid_exists(wrapper.pid), timeout=10)
        assert group_members(wrapper.pid), "the server should outlive its wrapper"
        with outpost.client() as api:
            assert api.get("/services/srv/1").json() == {"status": None}
            assert httpx.get(address, timeout=5).json()["user"] == "erin"  # and it still serves
            assert api.delete("/services/srv/1").status_code == 200
        assert group_members(wrapper.pid) == []
        assert marked_processes("(no marker)", [outpost.data_dir / "servers"]) == []  # nothing works in there
    finally:
        harness.stop_outpost(outpost)

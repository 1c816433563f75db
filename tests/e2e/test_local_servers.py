"""`outpost dev`'s local servers as a newcomer meets them: the default command without an activated venv."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_body
from tests.e2e import harness
from tests.e2e.processes import VENV_BIN

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
    (as root, as root with --allow-root, since `nobody` cannot run the venv's interpreter under /root)."""
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

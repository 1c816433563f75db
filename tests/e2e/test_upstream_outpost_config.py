"""An upstream Outpost's pod environment and `outpost_config.py`, unchanged, against the real OutpostSpawner:
`usernames`/`passwords`, OUTPOST_CONFIG_FILE, OUTPOST_BASE_PATH, OUTPOST_CREDITS_PATH, and the
`c.JupyterHubOutpost.*` traits as upstream's docs describe them (spawner_class with
`c.SimpleLocalProcessSpawner.*`, an allow_override coroutine, sanitize_start_response, send_events)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.harness import Hub, Outpost
from tests.e2e.processes import wait_until

pytestmark = pytest.mark.e2e
BASE_PATH = "/outpost"
OUTPOST_CONFIG = """\
# outpost_config.py as an upstream installation has it (chart value outpostConfig)
import logging

from jupyterhub.spawner import SimpleLocalProcessSpawner

c.JupyterHubOutpost.extra_log_handlers = [logging.FileHandler({log!r})]
c.JupyterHubOutpost.log_format = "%(color)s[%(levelname)1.1s %(asctime)s %(name)s]%(end_color)s %(message)s"
c.JupyterHubOutpost.log_datafmt = "%Y-%m-%d"  # the upstream docs' spelling

c.JupyterHubOutpost.spawner_class = SimpleLocalProcessSpawner
c.SimpleLocalProcessSpawner.home_dir_template = {home!r}
c.JupyterHubOutpost.send_events = False


async def allow_override(jupyterhub_name, misc):
    return "image" not in misc

c.JupyterHubOutpost.allow_override = allow_override


async def sanitize_start_response(spawner, original_response):
    ip, port = original_response  # LocalProcessSpawner's start() answers (ip, port)
    with open({seen!r}, "a") as seen:
        print(isinstance(spawner, SimpleLocalProcessSpawner), spawner.user.name, spawner.name, port, file=seen)
    return f"http://127.0.0.1:{{port}}"

c.JupyterHubOutpost.sanitize_start_response = sanitize_start_response
"""
CREDITS = {
    "credits": {"default": {"cap": 50, "grant_value": 5, "grant_interval": 3600}},
    "users": {"guests": {"authentication": {"name": "guest.*"}, "forbidden": True}},
}


def spawner_home(tmp: Path) -> Path:
    """The SimpleLocalProcessSpawner's home: as root (CI), its jupyter server needs allow_root there."""
    home = tmp / "spawner-home"
    config = home / ".jupyter" / "jupyter_server_config.py"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("c.ServerApp.allow_root = True\n" if os.getuid() == 0 else "")
    return home


@pytest.fixture(scope="module")
def outpost_env(e2e_dir: Path) -> dict[str, str]:
    config = e2e_dir / "outpost_config.py"
    config.write_text(
        OUTPOST_CONFIG.format(
            home=str(spawner_home(e2e_dir)), seen=str(e2e_dir / "sanitized.txt"), log=str(e2e_dir / "extra.log")
        )
    )
    credits = e2e_dir / "credits.yaml"
    credits.write_text(yaml.safe_dump(CREDITS))
    return {
        "OUTPOST_CONFIG_FILE": str(config),
        "OUTPOST_BASE_PATH": BASE_PATH,
        "OUTPOST_CREDITS_PATH": str(credits),
        "OUTPOST_FLAVORS_PATH": str(e2e_dir / "no-such-flavors.yaml"),  # missing: no flavors, as upstream
    }


@pytest.fixture(scope="module")
def hub_extra_config() -> str:
    return """
def _upstream_misc(spawner, user_options):
    # A server named "evil..." asks to override the image, which allow_override refuses.
    return {"image": "evil:latest"} if spawner.name.startswith("evil") else {}

c.OutpostSpawner.custom_misc = _upstream_misc
"""


def test_a_server_starts_polls_and_stops_with_upstreams_config(hub: Hub, outpost: Outpost, e2e_dir: Path) -> None:
    assert outpost.request_url.endswith(f"{BASE_PATH}/services")  # the printed snippet names the prefix
    user = "alice"
    hub.create_user(user)
    hub.start(user, "lab")
    response = hub.proxied(user, "lab", "api/status")
    assert response.status_code == 200, response.text
    [listed] = [s for s in outpost.services() if s["name"] == "lab"]
    # sanitize_start_response got the real Spawner and its raw (ip, port) answer.
    seen = (e2e_dir / "sanitized.txt").read_text().split()
    assert seen[:3] == ["True", user, "lab"] and int(seen[3]) > 0, seen
    # send_events = False: none of the outpost's progress messages reached the hub.
    messages = [str(e.get("message", "")) for e in hub.events(user, "lab")]
    assert not {"Start request received by the outpost", "Server is ready"} & set(messages), messages
    with outpost.client() as api:
        assert api.get(f"/services/lab/{listed['start_id']}").json() == {"status": None}
    hub.stop(user, "lab")
    # extra_log_handlers got the outpost's log lines, in log_format with log_datafmt's dates.
    lines = (e2e_dir / "extra.log").read_text().splitlines()
    pattern = re.compile(r"\[I \d{4}-\d\d-\d\d outpost.lifecycle.start\] started e2ehub/lab/\S+")
    assert any(pattern.fullmatch(line) for line in lines), lines
    assert [s for s in outpost.services() if s["name"] == "lab"] == []
    wait_until("the server's port to close", lambda: _closed(int(seen[3])), timeout=20)


def test_allow_override_refuses_the_start_before_anything_is_stored(hub: Hub, outpost: Outpost) -> None:
    user = "mallory"
    hub.create_user(user)
    response = hub.request_start(user, "evil")
    assert response.status_code >= 400 or response.status_code == 202, response.text

    def failed_event() -> dict[str, object] | None:
        return next((e for e in hub.events(user, "evil") if e.get("failed")), None)

    event = wait_until("a failed event for mallory/evil", failed_event, timeout=30)
    assert event is not None and "image" in str(event.get("html_message")), event
    wait_until("mallory/evil gone from the hub", lambda: hub.server(user, "evil") is None, 30)
    assert [s for s in outpost.services() if s["name"] == "evil"] == []


def test_the_api_is_served_under_the_base_path_and_without_it(outpost: Outpost) -> None:
    root = f"http://127.0.0.1:{outpost.api_port}"
    for prefix in (BASE_PATH, ""):
        with httpx.Client(base_url=root + prefix, headers=outpost.auth, timeout=10) as api:
            assert api.get("/ping").json() == {"ping": "pong!"}
            assert api.get("/services/").status_code == 200
            assert api.get("/credits/").json() == {"default": CREDITS["credits"]["default"]}
            assert api.post("/usercredits", json={"name": "guest1"}).json() == {
                "cap": 0, "grant_value": 0, "grant_interval": 86400,
            }  # fmt: skip
    # A path that only starts like the prefix is not under it.
    with httpx.Client(base_url=root, headers=outpost.auth, timeout=10) as api:
        assert api.get(f"{BASE_PATH}x/services").status_code == 404
        assert api.post(f"{BASE_PATH}x/services", json={"name": "x"}).status_code == 404


def _closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    except httpx.TransportError:
        return True
    return False

"""A hub's callback URLs as a request forger would choose them: the outpost POSTs only where the
hub's `callbackUrls` admit, never to link-local or metadata addresses nor to its own ports, and the
administrator's flavors-update token never leaves for a URL outside the list."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import wait_until
from tests.security.stack import RECOMMENDED_OVERRIDES, Recorder, Stack, launch, shut_down, start_body, start_recorder

ADMIN_FLAVORS_TOKEN = "admin-flavors-" + secrets.token_hex(8)
ASYNC = {"execution-type": "async"}


@pytest.fixture(scope="module")
def hub_api() -> Iterator[Recorder]:
    """hubA's real callback API: the one origin (and path) its callbackUrls admit."""
    recorder = start_recorder()
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
def stack(stack_dir: Path, hub_api: Recorder) -> Iterator[Stack]:
    """hubA limited to its own API (and given the administrator's flavors-update token); hubB without
    a list. The stack's own recorder is a victim elsewhere on the outpost's network."""
    values = {
        "flavors": {"small": {"max": 10, "weight": 1}},
        "hubOptions": {
            "hubA": {
                "allowedOverrides": RECOMMENDED_OVERRIDES,
                "callbackUrls": [f"{hub_api.url}/hub/api/"],
                "flavorsUpdateToken": ADMIN_FLAVORS_TOKEN,
            },
        },
    }
    running = launch(stack_dir, f"security-callbacks-{secrets.token_hex(4)}", values=values)
    yield running
    shut_down(running)


def callback_start(name: str, events: str, tunnel: str, flavors: str, **env: str) -> dict[str, Any]:
    body = start_body(name=name)
    body["misc"] = {}
    body["user_options"]["flavor"] = "small"
    body["env"].update(
        JUPYTERHUB_EVENTS_URL=events, JUPYTERHUB_SETUPTUNNEL_URL=tunnel, JUPYTERHUB_FLAVORS_UPDATE_URL=flavors, **env
    )
    return body


def start_and_finish(stack: Stack, hub: str, body: dict[str, Any]) -> str:
    """An async start, waited for until the outpost has made every call it makes for a start (the
    setup-tunnel request is its last, before the `started` line)."""
    response = stack.start(hub, body, **ASYNC)
    assert response.status_code == 202, response.text
    sid = f"{hub}/{body['name']}/1"
    wait_until(f"the start of {sid}", lambda: f"started {sid}" in stack.log(), timeout=30)
    return sid


def unmatched_posts(stack: Stack) -> list[str]:
    """The outpost's own count of POSTs to paths it does not serve (a hub's callback path, say)."""
    text = stack.metrics()
    counted = (line for line in text.splitlines() if line.startswith("outpost_requests_total{"))
    return [line for line in counted if 'route="unmatched"' in line and 'method="POST"' in line]


def test_urls_outside_callback_urls_are_never_called(stack: Stack, hub_api: Recorder) -> None:
    victim = stack.recorder
    token = "hub-api-token-" + secrets.token_hex(8)
    body = callback_start(
        "outside",
        events=f"{victim.url}/hub/api/users/progress/events/alice/outside",  # another port
        tunnel=f"{hub_api.url}/elsewhere/setuptunnel",  # the hub's origin, outside the path
        flavors=f"http://127.0.0.1:{hub_api.port}@127.0.0.1:{victim.port}/hub/api/outpostflavors",  # user info
    )
    body["env"]["JUPYTERHUB_API_TOKEN"] = token
    sid = start_and_finish(stack, "hubA", body)

    with stack.api("hubA") as api:
        polled = api.get("/services/outside/1", params={"collect_logs": "true"}).json()
        assert polled["status"] is None
        assert polled["logs"][:3] == [
            f"outpost: {name} is not called: it is not under hubOptions.hubA.callbackUrls"
            for name in ("JUPYTERHUB_EVENTS_URL", "JUPYTERHUB_SETUPTUNNEL_URL", "JUPYTERHUB_FLAVORS_UPDATE_URL")
        ]
        assert api.delete("/services/outside/1").status_code == 200  # a stop sends a flavor update too
    assert victim.calls == [] and hub_api.calls == []
    log = stack.log()
    for name in ("JUPYTERHUB_EVENTS_URL", "JUPYTERHUB_SETUPTUNNEL_URL", "JUPYTERHUB_FLAVORS_UPDATE_URL"):
        assert f"{name} of hub hubA is not called for {sid}: it is not under hubOptions.hubA.callbackUrls" in log
    assert token not in log and ADMIN_FLAVORS_TOKEN not in log and "/elsewhere/" not in log


def test_urls_under_callback_urls_are_called_with_their_tokens(stack: Stack, hub_api: Recorder) -> None:
    token = "hub-api-token-" + secrets.token_hex(8)
    body = callback_start(
        "inside",
        events=f"{hub_api.url}/hub/api/users/progress/events/alice/inside",
        tunnel=f"{hub_api.url}/hub/api/users/setuptunnel/alice/inside",
        flavors=f"{hub_api.url}/hub/api/outpostflavors/hubA",
    )
    body["env"]["JUPYTERHUB_API_TOKEN"] = token
    start_and_finish(stack, "hubA", body)
    assert stack.stop("hubA", "inside").status_code == 200

    by_path: dict[str, set[str]] = {}
    for call in hub_api.calls:
        by_path.setdefault(call["path"], set()).add(call["headers"]["Authorization"])
    assert by_path == {
        "/hub/api/users/progress/events/alice/inside": {f"token {token}"},
        "/hub/api/users/setuptunnel/alice/inside": {f"token {token}"},
        "/hub/api/outpostflavors/hubA": {f"token {ADMIN_FLAVORS_TOKEN}"},
    }
    assert stack.recorder.calls == []
    hub_api.calls.clear()


def test_without_a_list_our_own_ports_and_metadata_names_are_never_called(stack: Stack) -> None:
    """hubB has no callbackUrls: its URLs at the outpost's API port, at a name for its SSH port, and at
    a name that resolves to 169.254.169.254 are refused on the address the outpost would connect to."""
    body = callback_start(
        "own-ports",
        events=f"http://127.0.0.1:{stack.api_port}/hub/api/users/progress/events/alice/own-ports",
        tunnel=f"http://localhost:{stack.ssh_port}/hub/api/users/setuptunnel/alice/own-ports",
        flavors="http://2852039166/latest/meta-data/iam/",  # 169.254.169.254, as the resolver reads it
        JUPYTERHUB_FLAVORS_UPDATE_TOKEN="hub-flavors-" + secrets.token_hex(8),
    )
    sid = start_and_finish(stack, "hubB", body)  # the start still succeeds
    with stack.api("hubB") as api:
        assert api.get("/services/own-ports/1").json() == {"status": None}

    log = stack.log()
    assert (
        f"JUPYTERHUB_EVENTS_URL of hub hubB is not called for {sid}: 127.0.0.1 port {stack.api_port} "
        "is the outpost's own listener" in log
    )
    assert f"JUPYTERHUB_SETUPTUNNEL_URL of hub hubB is not called for {sid}: " in log
    assert f"port {stack.ssh_port} is the outpost's own listener" in log
    assert (
        f"JUPYTERHUB_FLAVORS_UPDATE_URL of hub hubB is not called for {sid}: "
        "169.254.169.254 is a link-local or cloud metadata address" in log
    )
    assert "Traceback" not in log
    # The API never received a POST for a path it does not serve; the count would show one.
    assert unmatched_posts(stack) == []
    httpx.post(f"{stack.url}/hub/api/users/progress/events/alice/own-ports", json={}, timeout=5)
    assert len(unmatched_posts(stack)) == 1
    assert stack.stop("hubB", "own-ports").status_code == 200

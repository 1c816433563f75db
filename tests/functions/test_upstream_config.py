"""Upstream's `c.JupyterHubOutpost.*` traits and credits routes through the API, with the local backend."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from outpost.runtime import get_runtime
from outpost.settings import Settings
from tests.conftest import HubReceiver, basic, function_process, start_body
from tests.lib.test_credits import CONFIG, GPU, STANDARD

pytestmark = pytest.mark.asyncio(loop_scope="session")
A, B = basic("hubA"), basic("hubB")
UPSTREAM = """
async def refuse_images(jupyterhub_name, misc):
    return "image" not in misc
c.JupyterHubOutpost.allow_override = refuse_images

async def lower_case(authentication):
    return {**authentication, "name": authentication["name"].lower()}
c.JupyterHubOutpost.update_user_authentication = lower_case

async def rename(spawner, response):
    assert response.startswith("http://127.0.0.1:"), response
    return (f"{spawner.jupyterhub_name}-{spawner.name}-{spawner.user.name}.example", spawner.port)
c.JupyterHubOutpost.sanitize_start_response = rename

c.JupyterHubOutpost.send_events = lambda jupyterhub_name: jupyterhub_name == "hubB"
c.JupyterHubOutpost.flavors_update_token = lambda jupyterhub_name: "token-of-" + jupyterhub_name
c.JupyterHubOutpost.global_max_per_user = 1
c.JupyterHubOutpost.request_kwargs = {"request_timeout": 3, "validate_cert": True, "follow_redirects": True}
c.JupyterHubOutpost.poll_requires_state = True
"""


@pytest.fixture
def upstream(make_settings: Callable[..., Settings], backend_config: Path) -> Callable[..., Settings]:
    backend_config.write_text(backend_config.read_text() + UPSTREAM)

    def make(**overrides: Any) -> Settings:
        return make_settings(credits=CONFIG, **overrides)

    return make


async def test_credits_for_hubs_and_users(api: httpx.AsyncClient, upstream: Callable[..., Settings]) -> None:
    upstream()
    assert (await api.get("/credits/", headers=B)).json() == {"standard": {**STANDARD, "cap": 20}}
    assert (await api.get("/credits", headers=A)).json() == {"standard": STANDARD, "gpu": GPU}
    alice = {"name": "Alice", "groups": ["gpu-users"]}
    assert (await api.post("/usercredits", json=alice, headers=B)).json() == {"gpu": {**GPU, "grant_value": 4}}
    # update_user_authentication lower-cases the name before the rules match: "GUEST-1" is a guest.
    guest = await api.post("/usercredits", json={"name": "GUEST-1"}, headers=A)
    assert guest.json() == {"cap": 0, "grant_value": 0, "grant_interval": 86400}
    assert (await api.post("/usercredits", json={}, headers=B)).json() == {"standard": {**STANDARD, "cap": 20}}


async def test_credits_refuse_bad_bodies_and_strangers(
    api: httpx.AsyncClient, upstream: Callable[..., Settings]
) -> None:
    upstream()
    for body in (b"[1]", b"{", b'"x"'):
        answer = await api.post("/usercredits", content=body, headers=B)
        assert answer.status_code == 400, body
        assert answer.json()["error"] in ("InvalidJSON", "InvalidBody")
    assert (await api.get("/credits/", headers=basic("hubA", "wrong"))).status_code == 401


async def test_no_credits_configured_answers_empty(api: httpx.AsyncClient, settings: Settings) -> None:
    assert (await api.get("/credits/", headers=A)).json() == {}
    assert (await api.post("/usercredits", json={"name": "x"}, headers=A)).json() == {}


async def test_allow_override_refuses_before_anything_is_stored(
    api: httpx.AsyncClient, upstream: Callable[..., Settings]
) -> None:
    upstream()
    body = start_body()
    body["misc"]["image"] = "evil:latest"
    refused = await api.post("/services", json=body, headers=A)
    assert refused.status_code == 419
    assert "image" in refused.json()["args"][0]
    assert (await api.get("/services", headers=A)).json() == []


async def test_sanitize_send_events_and_flavor_token(
    api: httpx.AsyncClient, upstream: Callable[..., Settings], hub_receiver: HubReceiver
) -> None:
    upstream(flavors={"small": {"max": 5}})
    started: dict[str, str] = {}
    for hub, headers in (("hubA", A), ("hubB", B)):
        body = start_body(hub_url=hub_receiver.url, user=f"user-{hub}")
        body["user_options"]["flavor"] = "small"
        body["env"]["JUPYTERHUB_FLAVORS_UPDATE_URL"] = f"{hub_receiver.url}/flavors/{hub}"
        answer = await api.post("/services", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        started[hub] = answer.json()["service"]
    host, port = started["hubA"].rsplit(":", 1)
    assert host == "hubA-srv-user-hubA.example" and int(port) > 0  # the view's ip/port are the server's
    assert started["hubB"].startswith("hubB-srv-user-hubB.example:")
    # send_events answers True for hubB only: its user saw progress, hubA's did not.
    await hub_receiver.wait_for(lambda: bool(hub_receiver.of("/hub/api/users/progress/events/user-hubB/srv")))
    assert hub_receiver.of("/hub/api/users/progress/events/user-hubA/srv") == []
    # No token in the env: the flavor update carries flavors_update_token's, per hub.
    await hub_receiver.wait_for(lambda: bool(hub_receiver.of("/flavors/hubA") and hub_receiver.of("/flavors/hubB")))
    assert hub_receiver.of("/flavors/hubA")[0]["authorization"] == "token token-of-hubA"
    assert hub_receiver.of("/flavors/hubB")[0]["authorization"] == "token token-of-hubB"
    for headers in (A, B):
        assert (await api.delete("/services/srv/1", headers=headers)).status_code == 200


async def test_global_max_per_user(api: httpx.AsyncClient, upstream: Callable[..., Settings]) -> None:
    upstream()
    assert (await api.post("/services", json=start_body(start_id="1"), headers=A)).status_code == 200
    second = await api.post("/services", json=start_body(start_id="2"), headers=A)
    assert second.status_code == 419
    assert "1 of the 1 server" in second.json()["args"][0]
    assert (await api.post("/services", json=start_body(start_id="2", user="bob"), headers=A)).status_code == 200
    for start_id, user in (("1", "alice"), ("2", "bob")):
        assert (await api.delete(f"/services/srv/{start_id}", headers=A)).status_code == 200, user


async def test_traits_without_meaning_warn_once(
    api: httpx.AsyncClient, upstream: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    upstream()
    with caplog.at_level(logging.WARNING, logger="outpost.upstream_config"):
        runtime = await get_runtime()
        assert runtime.upstream.poll_requires_state is True
        timeout = runtime.http.timeout
    warnings = [r.getMessage() for r in caplog.records if r.name == "outpost.upstream_config"]
    assert len([w for w in warnings if "poll_requires_state" in w]) == 1
    assert len([w for w in warnings if "follow_redirects" in w]) == 1
    assert timeout.read == 3.0 and timeout.connect == 3.0


async def test_spawner_class_selects_the_spawner_backend(
    make_settings: Callable[..., Settings], backend_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend_config.write_text('c.JupyterHubOutpost.spawner_class = "localprocess"\n')
    make_settings(backend="kubernetes")  # the chart's default, always set
    with caplog.at_level(logging.WARNING, logger="outpost.upstream_config"):
        assert (await get_runtime()).backend_name == "spawner"
    assert "the spawner backend runs, not 'kubernetes'" in caplog.text
    backend_config.write_text("")
    make_settings()
    assert (await get_runtime()).backend_name == "local"


async def test_functions_serve_under_the_base_path(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each function, as deployed (its own process), routes `/outpost/...` and `/...` alike."""
    monkeypatch.setenv("OUTPOST_BASE_PATH", "/outpost")
    async with (
        function_process("poll", "poll_service", settings) as (_, poll),
        function_process("start", "start_service", settings) as (_, start),
    ):
        for prefix in ("/outpost", ""):
            assert (await poll.get(f"{prefix}/ping")).json() == {"ping": "pong!"}
            assert (await poll.get(f"{prefix}/services/", headers=A)).json() == []
            assert (await poll.get(f"{prefix}/credits/", headers=A)).json() == {}
            refused = await start.post(f"{prefix}/services", json={"name": 5}, headers=A)
            assert refused.status_code == 400 and refused.json()["error"] == "InvalidBody"
        assert (await poll.get("/outposts/services", headers=A)).status_code == 404


async def _tunnel_recreation() -> Callable[[str], Awaitable[bool]]:
    from outpost.upstream_config import tunnel_recreation

    runtime = await get_runtime()

    async def stored_hubs() -> set[str]:
        return {meta.id.hub async for meta in runtime.store.all_hubs_services()}

    return await tunnel_recreation(runtime.upstream, runtime.settings, stored_hubs)


async def test_tunnel_recreation_asks_upstreams_hooks(
    make_settings: Callable[..., Settings], backend_config: Path
) -> None:
    backend_config.write_text(
        "async def per_hub(wrapper, jupyterhub_name):\n"
        "    assert wrapper.__class__.__name__ == 'JupyterHubOutpost'\n"
        "    return jupyterhub_name == 'hubA'\n"
        "c.JupyterHubOutpost.ssh_recreate_at_start = per_hub\n"
    )
    make_settings(
        hub_usernames="hubA;hubB;hubC", hub_passwords="a;b;c", hub_options={"hubC": {"recreateTunnels": False}}
    )
    wanted = await _tunnel_recreation()
    assert [await wanted(hub) for hub in ("hubA", "hubB", "hubC")] == [True, False, False]

    backend_config.write_text("c.JupyterHubOutpost.ssh_recreate_at_start_global = lambda wrapper, hubs: True\n")
    make_settings()
    wanted = await _tunnel_recreation()
    assert [await wanted(hub) for hub in ("hubA", "hubB")] == [False, False]  # the global hook did it all

    backend_config.write_text("")
    make_settings(hub_options={"hubB": {"recreateTunnels": False}})
    wanted = await _tunnel_recreation()
    assert [await wanted(hub) for hub in ("hubA", "hubB")] == [True, False]  # ours: recreate unless told not to


async def test_failing_hooks_fail_closed_without_leaks(
    api: httpx.AsyncClient, make_settings: Callable[..., Settings], backend_config: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A hook the hub's input makes fail refuses that input (never a 500, never its values in the log);
    a failing sanitize_start_response stops the server it was about."""
    from outpost.backends.local import LocalBackend

    backend_config.write_text(
        backend_config.read_text()
        + "def picky(authentication):\n    raise ValueError(f'cannot use {authentication}')\n"
        + "c.JupyterHubOutpost.update_user_authentication = picky\n"
        + "c.JupyterHubOutpost.allow_override = lambda name, misc: misc['nope'] if 'image' in misc else True\n"
        + "c.JupyterHubOutpost.sanitize_start_response = lambda spawner, response: 1 / 0\n"
    )
    settings = make_settings()
    with caplog.at_level(logging.INFO):
        refused = await api.post("/usercredits", json={"name": "alice", "token": "s3cret-token"}, headers=A)
        assert refused.status_code == 400 and "update_user_authentication" in refused.json()["message"]
        assert (await api.post("/userflavors", json={"token": "s3cret-token"}, headers=A)).status_code == 400
        body = start_body()
        body["misc"]["image"] = "s3cret-image"
        assert (await api.post("/services", json=body, headers=A)).status_code == 419  # allow_override raised
        failed = await api.post("/services", json=start_body(), headers=A)
    assert failed.status_code == 419 and failed.json()["class"] == "BackendError", failed.text
    assert "s3cret" not in caplog.text
    assert "update_user_authentication raised ValueError at outpost_config.py:" in caplog.text
    assert (await api.get("/services", headers=A)).json() == []
    assert await LocalBackend(Config(), settings.data_dir).running() == []


async def test_request_kwargs_become_the_hub_clients_options() -> None:
    import ssl

    import certifi
    from traitlets.config import Config as TraitletsConfig

    from outpost.upstream_config import hub_client_options, load_upstream

    def options(**kwargs: Any) -> dict[str, Any]:
        config = TraitletsConfig()
        config.JupyterHubOutpost.request_kwargs = kwargs
        return hub_client_options(load_upstream(config), 10.0)

    assert options()["verify"] is True and options()["timeout"].read == 10.0  # we check certificates by default
    assert options(validate_cert=False)["verify"] is False
    trusted = options(ca_certs=certifi.where(), request_timeout=4, connect_timeout=1)
    assert isinstance(trusted["verify"], ssl.SSLContext) and trusted["verify"].verify_mode == ssl.CERT_REQUIRED
    assert (trusted["timeout"].read, trusted["timeout"].connect) == (4.0, 1.0)
    config = TraitletsConfig()
    config.JupyterHubOutpost.request_kwargs = lambda wrapper: {"request_timeout": 2}
    assert hub_client_options(load_upstream(config), 10.0)["timeout"].read == 2.0

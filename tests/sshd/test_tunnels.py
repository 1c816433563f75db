"""Tunnel recreation: the stored answers go back to the hubs that want them, through the HubClient."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio

from outpost.hub import HubClient
from outpost.models import Phase
from outpost.settings import Settings
from outpost.store import Store
from sshd.tunnels import RecreateResult, recreate_tunnels
from tests.conftest import HubReceiver
from tests.sshd.helpers import free_port, run_service


def hub_env(url: str, token: str) -> dict[str, str]:
    return {"JUPYTERHUB_SETUPTUNNEL_URL": url, "JUPYTERHUB_API_TOKEN": token}


@pytest_asyncio.fixture
async def hub_client() -> AsyncIterator[HubClient]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield HubClient(http, retries=1)


@pytest.mark.asyncio
async def test_running_services_are_posted_to_their_hubs(
    store: Store,
    hub_receiver: HubReceiver,
    hub_client: HubClient,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each running service a hub tunnelled to is POSTed with its token; opted-out hubs, stopped services and
    services reached without a tunnel are skipped, and an unreachable hub does not stop the others."""
    caplog.set_level(logging.INFO)
    hub_url: str = hub_receiver.url
    settings = make_settings(hub_options={"b": {"recreateTunnels": False}})
    gone = f"http://127.0.0.1:{free_port()}/hub/api/users/setuptunnel/bob/"
    tunnelled = [
        await run_service(store, "a", "lab", "10.0.0.1:8888", env=hub_env(f"{hub_url}/a/lab", "token-a-secret")),
        await run_service(store, "a", "", "10.0.0.2:8888", env=hub_env(gone, "token-x-secret")),
        await run_service(store, "b", "lab", "10.0.0.3:8888", env=hub_env(f"{hub_url}/b/lab", "token-b-secret")),
        await run_service(store, "c", "lab", "10.0.0.4:8888", env=hub_env(f"{hub_url}/c", "token-c")),
    ]
    await run_service(store, "a", "direct", "10.0.0.5:8888", env=hub_env(f"{hub_url}/a/direct", "token-d"))
    for sid in tunnelled:
        assert await store.mark_tunnelled(sid)
    await store.transition(tunnelled[-1], Phase.STOPPED, (Phase.RUNNING,))

    result = await recreate_tunnels(store, hub_client, settings.recreates_tunnels)

    assert result == RecreateResult(posted=1, failed=1, skipped=1, untunnelled=1)
    assert hub_receiver.calls == [
        {
            "path": "/a/lab",
            "authorization": "token token-a-secret",
            "json": {"service": "http://10.0.0.1:8888"},
        }
    ]
    assert "tunnel recreation requested service=a/lab/1" in caplog.text
    assert "tunnel recreation failed service=a/<default>/1" in caplog.text
    assert "untunnelled=1" in caplog.text
    assert "secret" not in caplog.text
    assert "setuptunnel" not in caplog.text


@pytest.mark.asyncio
async def test_a_hub_that_never_tunnelled_is_never_asked(
    store: Store, hub_receiver: HubReceiver, hub_client: HubClient
) -> None:
    """A hub that reaches its servers directly would answer 400 and stop the server: it is not called."""
    hub_url: str = hub_receiver.url
    for port, name in enumerate(("one", "two"), start=8000):
        await run_service(store, "a", name, f"10.0.0.9:{port}", env=hub_env(f"{hub_url}/{name}", "t"))

    result = await recreate_tunnels(store, hub_client, lambda _hub: True)

    assert result == RecreateResult(untunnelled=2)
    assert hub_receiver.calls == []


@pytest.mark.asyncio
async def test_a_refusal_is_logged_and_the_service_keeps_running(
    store: Store, hub_receiver: HubReceiver, hub_client: HubClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The hub answers 400 (e.g. it no longer uses SSH): logged, no retry, and the record stays running."""
    caplog.set_level(logging.INFO)
    hub_receiver.status = 400
    sid = await run_service(store, "a", "lab", "10.0.0.1:8888", env=hub_env(f"{hub_receiver.url}/a", "t"))
    await store.mark_tunnelled(sid)

    result = await recreate_tunnels(store, hub_client, lambda _hub: True)

    assert result == RecreateResult(failed=1)
    assert len(hub_receiver.calls) == 1
    assert "answered 400" in caplog.text and "tunnel recreation failed service=a/lab/1" in caplog.text
    meta = await store.meta(sid)
    assert meta is not None and meta.phase == Phase.RUNNING and meta.tunnelled


@pytest.mark.asyncio
async def test_nothing_running_posts_nothing(store: Store, hub_client: HubClient) -> None:
    assert await recreate_tunnels(store, hub_client, lambda _hub: True) == RecreateResult()


@pytest.mark.asyncio
async def test_a_hubs_first_tunnel_is_recreated_alone(
    store: Store, hub_receiver: HubReceiver, hub_client: HubClient
) -> None:
    """The first call opens the hub's SSH master: it ends before the hub's other calls begin (which then run at
    once), so the hub never races itself for its ControlPath."""
    hub_receiver.delay_seconds = 0.05  # long enough for concurrent calls to overlap
    for port, name in enumerate(("n1", "n2", "n3", "n4"), start=9000):
        sid = await run_service(store, "a", name, f"10.0.1.1:{port}", env=hub_env(f"{hub_receiver.url}/{name}", "t"))
        await store.mark_tunnelled(sid)

    assert await recreate_tunnels(store, hub_client, lambda _hub: True) == RecreateResult(posted=4)

    first = hub_receiver.events[0].split()[1]
    assert hub_receiver.events[1] == f"end {first}", hub_receiver.events
    rest = hub_receiver.events[2:]
    assert [event.split()[0] for event in rest] == ["begin"] * 3 + ["end"] * 3, hub_receiver.events

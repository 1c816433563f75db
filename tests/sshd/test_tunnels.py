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
    hub_receiver: object,
    hub_client: HubClient,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each running service's answer is POSTed with its token; opted-out hubs and stopped services
    are skipped, and an unreachable hub does not stop the others."""
    caplog.set_level(logging.INFO)
    hub_url: str = hub_receiver.url  # type: ignore[attr-defined]
    settings = make_settings(hub_options={"b": {"recreateTunnels": False}})
    gone = f"http://127.0.0.1:{free_port()}/hub/api/users/setuptunnel/bob/"
    await run_service(store, "a", "lab", "10.0.0.1:8888", env=hub_env(f"{hub_url}/a/lab", "token-a-secret"))
    await run_service(store, "a", "", "10.0.0.2:8888", env=hub_env(gone, "token-x-secret"))
    await run_service(store, "b", "lab", "10.0.0.3:8888", env=hub_env(f"{hub_url}/b/lab", "token-b-secret"))
    stopped = await run_service(store, "c", "lab", "10.0.0.4:8888", env=hub_env(f"{hub_url}/c", "token-c"))
    await store.transition(stopped, Phase.STOPPED, (Phase.RUNNING,))

    result = await recreate_tunnels(store, hub_client, settings.recreates_tunnels)

    assert result == RecreateResult(posted=1, failed=1, skipped=1)
    assert hub_receiver.calls == [  # type: ignore[attr-defined]
        {
            "path": "/a/lab",
            "authorization": "token token-a-secret",
            "json": {"service": "http://10.0.0.1:8888"},
        }
    ]
    assert "tunnel recreation requested service=a/lab/1" in caplog.text
    assert "tunnel recreation failed service=a/<default>/1" in caplog.text
    assert "secret" not in caplog.text
    assert "setuptunnel" not in caplog.text


@pytest.mark.asyncio
async def test_nothing_running_posts_nothing(store: Store, hub_client: HubClient) -> None:
    assert await recreate_tunnels(store, hub_client, lambda _hub: True) == RecreateResult()

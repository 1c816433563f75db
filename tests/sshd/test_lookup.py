"""What the daemon reads from the records (`sshd.lookup`): the tunnels of running services, from their hubs'
environment variables and start answers."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from outpost.crypto import Crypt
from outpost.models import Phase, ServiceId
from outpost.store import Store
from sshd.lookup import TunnelTarget, running_tunnels
from tests.sshd.helpers import run_service

pytestmark = pytest.mark.asyncio
ENV = {"JUPYTERHUB_SETUPTUNNEL_URL": "http://hub/setuptunnel/a", "JUPYTERHUB_API_TOKEN": "token-secret"}


async def targets(store: Store) -> list[TunnelTarget]:
    return sorted([target async for target in running_tunnels(store)], key=lambda t: t.id.name)


async def test_a_running_service_with_a_url_and_a_token_is_a_tunnel(store: Store) -> None:
    await run_service(store, "a", "lab", "10.0.0.1:8888", env=ENV)
    assert await targets(store) == [
        TunnelTarget(
            ServiceId("a", "lab", "1"), "http://10.0.0.1:8888", ENV["JUPYTERHUB_SETUPTUNNEL_URL"], "token-secret"
        )
    ]


async def test_services_not_running_or_without_url_or_token_are_not(store: Store) -> None:
    stopped = await run_service(store, "a", "stopped", "10.0.0.1:8888", env=ENV)
    await store.transition(stopped, Phase.STOPPED, (Phase.RUNNING,))
    await run_service(store, "a", "no-token", "10.0.0.2:8888", env={"JUPYTERHUB_SETUPTUNNEL_URL": "http://hub/x"})
    await run_service(store, "a", "no-url", "10.0.0.3:8888", env={"JUPYTERHUB_API_TOKEN": "t"})
    assert await targets(store) == []


async def test_an_undecryptable_record_is_skipped_and_the_others_are_read(
    store: Store, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    foreign = Store(redis, Crypt([Fernet.generate_key().decode()]))
    await run_service(foreign, "b", "foreign", "10.0.0.4:8888", env=ENV)
    await run_service(store, "a", "lab", "10.0.0.1:8888", env=ENV)
    caplog.set_level(logging.WARNING)
    assert [target.id.name for target in await targets(store)] == ["lab"]
    assert "cannot recreate the tunnel of b/foreign/1" in caplog.text
    assert "token-secret" not in caplog.text

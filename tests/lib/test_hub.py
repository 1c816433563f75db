"""Calls back to the hub: only what the callback policy admits is called, failures are retried only
when a retry can help, and no failure of the hub becomes ours."""

from __future__ import annotations

import httpx
import pytest

from outpost.callbacks import CallbackPolicy
from outpost.hub import HubClient
from outpost.models import ServiceId
from tests.conftest import HubReceiver

on_loop = pytest.mark.asyncio(loop_scope="session")


@on_loop
async def test_the_hub_client_calls_nothing_a_policy_refuses(hub_receiver: HubReceiver) -> None:
    sid = ServiceId("hubA", "srv", "1")
    policy = CallbackPolicy({"hubA": [f"{hub_receiver.url}/allowed"]})
    async with httpx.AsyncClient(timeout=5) as http:
        hub = HubClient(http, retries=3, policy=policy)
        assert not await hub.setup_tunnel(f"{hub_receiver.url}/elsewhere", "api-token", "http://x:1", sid)
        assert not await hub.flavors_update(f"{hub_receiver.url}/allowedx", "admin-token", {}, sid)
        assert await hub.flavors_update(f"{hub_receiver.url}/allowed/flavors", "admin-token", {}, sid)
    assert [c["path"] for c in hub_receiver.calls] == ["/allowed/flavors"]

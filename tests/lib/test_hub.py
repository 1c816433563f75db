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


SID = ServiceId("hubA", "srv", "1")


@on_loop
@pytest.mark.parametrize(("status", "tries"), [(503, 3), (429, 3), (500, 3), (404, 1), (401, 1), (400, 1)])
async def test_only_answers_a_retry_can_change_are_retried(hub_receiver: HubReceiver, status: int, tries: int) -> None:
    hub_receiver.status = status
    async with httpx.AsyncClient(timeout=5) as http:
        hub = HubClient(http, retries=3)
        assert not await hub.setup_tunnel(f"{hub_receiver.url}/tunnel", "api-token", "http://x:1", SID)
    assert len(hub_receiver.calls) == tries
    assert hub_receiver.calls[0]["authorization"] == "token api-token"
    assert hub_receiver.calls[0]["json"] == {"service": "http://x:1"}


@on_loop
async def test_progress_is_sent_once_and_a_failure_is_retried(hub_receiver: HubReceiver) -> None:
    env = {"JUPYTERHUB_EVENTS_URL": f"{hub_receiver.url}/events", "JUPYTERHUB_API_TOKEN": "api-token"}
    hub_receiver.status = 503
    async with httpx.AsyncClient(timeout=5) as http:
        hub = HubClient(http, retries=2)
        assert not await hub.progress(env, SID, 50, "pulling the image")
        assert len(hub_receiver.calls) == 1  # progress is cosmetic: one try
        assert not await hub.progress(env, SID, 100, "the server failed", failed=True)
    assert len(hub_receiver.calls) == 3
    assert hub_receiver.calls[-1]["json"] == {
        "progress": 100, "message": "the server failed", "html_message": "the server failed", "failed": True,
    }  # fmt: skip


@on_loop
async def test_nothing_is_sent_without_a_url_and_a_token(hub_receiver: HubReceiver) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        hub = HubClient(http, retries=3)
        assert not await hub.progress({"JUPYTERHUB_API_TOKEN": "t"}, SID, 10, "x")
        assert not await hub.progress({"JUPYTERHUB_EVENTS_URL": f"{hub_receiver.url}/e"}, SID, 10, "x")
        assert await hub.progress(
            {"JUPYTERHUB_EVENTS_URL": f"{hub_receiver.url}/e", "JUPYTERHUB_API_TOKEN": "t"}, SID, 10, "x"
        )
    assert [call["path"] for call in hub_receiver.calls] == ["/e"]


@on_loop
async def test_a_hub_that_cannot_be_reached_or_a_url_that_cannot_be_sent_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        hub = HubClient(http, retries=2)
        assert not await hub.flavors_update("http://127.0.0.1:1/flavors", "s3cret-token", {}, SID)
        assert not await hub.flavors_update("http://[::1/broken", "s3cret-token", {}, SID)
        assert not await hub.setup_tunnel("http://127.0.0.1:1/x", "bad\ntoken", "http://x:1", SID)
    assert "s3cret-token" not in caplog.text and "127.0.0.1:1" not in caplog.text

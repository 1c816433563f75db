"""Async starts and stops handed to the event sink (the Knative broker) as structured CloudEvents."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest

from outpost.errors import EventsUnavailable
from outpost.lifecycle.events import Background
from outpost.models import ServiceId
from outpost.runtime import get_runtime
from outpost.settings import Settings
from tests.conftest import HubReceiver

pytestmark = pytest.mark.asyncio
SID = ServiceId("hubA", "srv", "1")


async def test_a_submitted_start_reaches_the_sink_as_one_cloudevent(
    make_settings: Callable[..., Settings], hub_receiver: HubReceiver
) -> None:
    make_settings(events_sink=hub_receiver.url + "/outpost/outpost")
    await Background(await get_runtime()).submit("start", SID)
    [call] = hub_receiver.calls
    assert call["path"] == "/outpost/outpost"
    event: dict[str, Any] = call["json"]
    assert (event["type"], event["id"]) == ("org.jupyterhub.outpost.start.requested", "start:hubA:srv:1")
    assert event["data"] == {"hub": "hubA", "name": "srv", "start_id": "1"}


async def test_a_sink_that_refuses_makes_the_request_fail_as_unavailable(
    make_settings: Callable[..., Settings], hub_receiver: HubReceiver
) -> None:
    make_settings(events_sink=hub_receiver.url)
    hub_receiver.status = 503
    with pytest.raises(EventsUnavailable):
        await Background(await get_runtime()).submit("stop", SID)


@pytest.mark.parametrize(
    ("sink", "verify_mode"),
    [("https://broker", ssl.CERT_REQUIRED), ("HTTPS://broker", ssl.CERT_REQUIRED), ("http://broker", ssl.CERT_NONE)],
)
async def test_only_an_https_sink_needs_certificates(
    make_settings: Callable[..., Settings], sink: str, verify_mode: ssl.VerifyMode
) -> None:
    """A plain-HTTP sink uses no TLS: its client skips loading a CA bundle (a cold start's 20-30 ms)."""
    make_settings(events_sink=sink)
    client = (await get_runtime()).sink_http
    assert client._transport._pool._ssl_context.verify_mode == verify_mode  # type: ignore[attr-defined]

"""The harness itself: both hubs start, poll and stop their own servers; neither sees the other's."""

from __future__ import annotations

import httpx

from tests.security.stack import Stack, start_body


def test_each_hub_runs_its_own_server(clean: Stack) -> None:
    for hub in ("hubA", "hubB"):
        body = start_body(name=f"own-{hub}")
        body["misc"] = {}
        response = clean.start(hub, body)
        assert response.status_code == 200, response.text
        address = response.json()["service"]
        assert httpx.get(address, timeout=5).status_code == 200
    with clean.api("hubA") as api:
        assert [s["name"] for s in api.get("/services").json()] == ["own-hubA"]
        assert api.get("/services/own-hubB/1").status_code == 404
    assert len(clean.record_keys()) == 2

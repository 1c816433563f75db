"""Prometheus metrics, request ids, and JSON log lines from a function served as deployed."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from outpost.settings import Settings
from tests.conftest import SCRAPER, TINY_ENV, basic, function_process, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_starts_and_services(api: httpx.AsyncClient, settings: Settings) -> None:
    before = samples((await api.get("/metrics", headers=SCRAPER)).text)
    assert (await api.post("/services", json=start_body(), headers=A)).status_code == 200
    assert (await api.get("/services/srv/1", headers=A)).status_code == 200
    response = await api.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)
    poll = ("outpost_requests_total", (("method", "GET"), ("route", "/services/{name:segment}/{start_id:segment}"),
                                       ("status", "200")))  # fmt: skip
    assert after[poll] == before.get(poll, 0) + 1
    started = ("outpost_start_seconds_count", (("outcome", "started"),))
    assert after[started] == before.get(started, 0) + 1
    assert after[("outpost_services", (("hub", "hubA"),))] == 1
    assert after[("outpost_services", (("hub", "hubB"),))] == 0
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200


async def test_request_ids_are_kept_when_sane_and_made_otherwise(api: httpx.AsyncClient, settings: Settings) -> None:
    kept = await api.get("/services", headers={**A, "X-Request-Id": "hub-req-42"})
    assert kept.headers["x-request-id"] == "hub-req-42"
    replaced = await api.get("/services", headers={**A, "X-Request-Id": "bad id; with junk"})
    assert replaced.headers["x-request-id"] != "bad id; with junk" and len(replaced.headers["x-request-id"]) == 32


async def test_a_deployed_function_logs_json_lines_with_the_request_id(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(hub_options=TINY_ENV)
    async with function_process("start", "start_service", settings, stderr=subprocess.PIPE) as (process, client):
        body = start_body()
        body["env"]["TINY_EXIT_CODE"] = "3"  # a failing start is logged
        response = await client.post("/services", json=body, headers={**A, "X-Request-Id": "trace-me"})
        assert response.status_code == 419
        await asyncio.sleep(0.2)
    assert process.stderr is not None
    lines = [json.loads(line) for line in process.stderr.read().decode().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("request_id") == "trace-me"]
    assert ours and {"time", "level", "logger", "message"} <= set(ours[0])
    assert any("start requested" in line["message"] for line in ours)
    assert any(line["message"].startswith("start of hubA/srv/1 failed: ") for line in ours)
    assert any(line["message"] == "request failed: 419 POST /services hub=hubA request_id=trace-me" for line in ours)
    assert not any("secret-api-token" in json.dumps(line) for line in lines)


async def test_each_failed_request_is_one_line_without_secrets(settings: Settings) -> None:
    """Status, method, route, hub and request id; a caller-chosen path is escaped, credentials never show."""
    async with function_process("poll", "poll_service", settings, stderr=subprocess.PIPE) as (process, client):
        wrong = basic("hubA", "not-the-password")
        assert (await client.get("/services", headers={**wrong, "X-Request-Id": "r-401"})).status_code == 401
        assert (await client.get("/services/x/1", headers={**A, "X-Request-Id": "r-404"})).status_code == 404
        # A terminal escape, a carriage return and a non-ASCII letter. (A path with a newline never reaches
        # our code: functions-framework's own route does not match it and answers its 404 itself.)
        forged = "/nothing%1B[31m%0D%C3%A9"
        assert (await client.get(forged, headers={**A, "X-Request-Id": "r-route"})).status_code == 404
        assert (await client.get("/services", headers={**A, "X-Request-Id": "r-ok"})).status_code == 200
    assert process.stderr is not None
    text = process.stderr.read().decode()
    messages = {line["request_id"]: line["message"] for line in map(json.loads, text.splitlines())
                if line.get("message", "").startswith("request failed")}  # fmt: skip
    assert messages == {
        "r-401": "request failed: 401 GET /services hub=- request_id=r-401",
        "r-404": "request failed: 404 GET /services/{name:segment}/{start_id:segment} hub=hubA request_id=r-404",
        "r-route": 'request failed: 404 GET "/nothing\\u001b[31m\\r\\u00e9" hub=- request_id=r-route',
    }
    assert "not-the-password" not in text and "password-a" not in text


@pytest.mark.parametrize("path", ["/metrics", "/%6detrics", "/metrics/", "/outpost/metrics", "/outpost/%6detrics/"])
async def test_metrics_want_the_metrics_token_in_every_spelling(
    api: httpx.AsyncClient, make_settings: Callable[..., Settings], path: str
) -> None:
    make_settings(base_path="/outpost")
    for headers in ({}, basic("hubA"), {"Authorization": "Bearer wrong-token-of-the-tests"}):
        answer = await api.get(path, headers=headers)
        assert answer.status_code == 401 and answer.json()["error"] == "ScraperUnauthorized", (headers, answer.text)
        assert answer.headers["www-authenticate"] == 'Bearer realm="metrics"'
    answer = await api.get(path, headers=SCRAPER)
    assert answer.status_code == 200 and "outpost_services" in answer.text


async def test_metrics_are_off_without_a_token_and_wrong_tokens_are_failed_logins(
    api: httpx.AsyncClient, make_settings: Callable[..., Settings]
) -> None:
    make_settings(metrics_token=None)
    answer = await api.get("/metrics", headers=SCRAPER)
    assert answer.status_code == 404 and answer.json()["error"] == "MetricsOff"
    make_settings(auth_failures_per_source=2)
    codes = [(await api.get("/metrics", headers={"Authorization": "Bearer guess"})).status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    assert (await api.get("/metrics", headers=SCRAPER)).status_code == 429  # the source is closed, as for a hub

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
from tests.conftest import TINY_ENV, basic, function_process, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_starts_and_services(api: httpx.AsyncClient, settings: Settings) -> None:
    before = samples((await api.get("/metrics")).text)
    assert (await api.post("/services", json=start_body(), headers=A)).status_code == 200
    assert (await api.get("/services/srv/1", headers=A)).status_code == 200
    response = await api.get("/metrics")
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
    assert not any("secret-api-token" in json.dumps(line) for line in lines)

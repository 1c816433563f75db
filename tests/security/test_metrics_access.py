"""/metrics names every hub and its usage: only the scraper's token opens it, in every spelling of the
path (a percent-encoded letter, a trailing slash, under the base path), against a running `outpost dev`.
Was: open to anyone who reached the port, and the chart's ingress blocked only the prefix `/metrics`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.security.stack import Stack
from tests.support.raw_http import request_bytes, send

BASE = "/outpost"
SPELLINGS = ["/metrics", "/%6detrics", "/metrics/", "/%6Detrics/", f"{BASE}/metrics", f"{BASE}/%6detrics/"]


@pytest.fixture(scope="module")
def stack_values() -> dict[str, Any]:
    return {"basePath": BASE}


@pytest.mark.parametrize("path", SPELLINGS)
def test_without_the_metrics_token_no_spelling_shows_anything(stack: Stack, path: str) -> None:
    hub = stack.tenants["hubA"].auth["Authorization"]
    for authorization in (None, hub, "Bearer not-the-token", f"Basic {stack.metrics_token}"):
        headers = [(b"Authorization", authorization.encode())] if authorization else []
        answer = send(stack.api_port, request_bytes(b"GET", path.encode(), headers), source="127.0.0.5")
        assert answer is not None and answer.status == 401, (path, authorization and authorization[:6], answer)
        assert answer.json()["error"] == "ScraperUnauthorized"
        assert answer.header(b"www-authenticate") == b'Bearer realm="metrics"'
        assert b"hubA" not in answer.body and b"hubB" not in answer.body and b"outpost_" not in answer.body


@pytest.mark.parametrize("path", SPELLINGS)
def test_the_metrics_token_opens_every_spelling_alike(stack: Stack, path: str) -> None:
    answer = httpx.get(f"{stack.url}{path}", headers={"Authorization": f"Bearer {stack.metrics_token}"}, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert 'outpost_services{hub="hubA"}' in answer.text

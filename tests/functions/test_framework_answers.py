"""A function as its container serves it (`outpost serve-function`) answers functions-framework's own 404 and
405 in our JSON shape, never as plain text (issue 23: `%0a` in a path, `/robots.txt`, TRACE)."""

from __future__ import annotations

import pytest

from outpost.settings import Settings
from tests.conftest import function_process

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/robots.txt", 404), ("GET", "/favicon.ico", 404), ("GET", "/services%0a", 404), ("TRACE", "/", 405)],
)
async def test_the_frameworks_own_answers_are_json(settings: Settings, method: str, path: str, status: int) -> None:
    async with function_process("poll", "poll_service", settings) as (_, client):
        answer = await client.request(method, path)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    assert "message" in answer.json() or "args" in answer.json()

"""`JsonAnswers`: functions-framework's own plain-text 404 and 405 answers, through the real functions'
apps (`outpost dev`'s router), become the JSON every other error is; everything else passes unchanged."""

from __future__ import annotations

import httpx
import pytest

from outpost.cli.devserver import load_function
from outpost.routes.framework import JsonAnswers
from tests.conftest import basic

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/services%0aX", 404, "UnknownRoute"),
        ("GET", "/robots.txt", 404, "UnknownRoute"),
        ("GET", "/favicon.ico", 404, "UnknownRoute"),
        ("TRACE", "/services", 405, "MethodNotAllowed"),
    ],
)
async def test_the_frameworks_own_answers_become_json(
    api: httpx.AsyncClient, method: str, path: str, status: int, error: str
) -> None:
    answer = await api.request(method, path, headers=basic("hubA"))
    assert answer.status_code == status and answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == error


async def test_the_bare_framework_answers_plain_text_and_ours_pass_unchanged(api: httpx.AsyncClient) -> None:
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=load_function("poll")), base_url="http://outpost")
    async with bare:
        assert (await bare.get("/robots.txt")).headers["content-type"].startswith("text/plain")
    wrapped = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=JsonAnswers(load_function("poll"))), base_url="http://outpost"
    )
    async with wrapped:
        assert (await wrapped.get("/robots.txt")).json()["error"] == "UnknownRoute"
    ours = await api.get("/services/nothing/1", headers=basic("hubA"))
    assert ours.status_code == 404 and ours.json()["error"] == "UnknownService"
    assert (await api.get("/ping")).json() == {"ping": "pong!"}

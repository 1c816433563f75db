"""The OpenAPI document matches the functions' route tables, and is valid OpenAPI 3."""

from __future__ import annotations

import importlib.util
import re

import httpx
import pytest
from openapi_spec_validator import validate

from outpost.cli.devserver import functions_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")


def served_routes() -> set[tuple[str, str]]:
    routes = set()
    for name in ("start", "poll", "stop"):
        spec = importlib.util.spec_from_file_location(f"routes_of_{name}", functions_dir() / name / "main.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        routes |= {(r.method.lower(), re.sub(r":\w+}", "}", r.path)) for r in module.ROUTES}
    return routes


async def test_every_route_is_described_and_nothing_else(api: httpx.AsyncClient) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert described == served_routes()

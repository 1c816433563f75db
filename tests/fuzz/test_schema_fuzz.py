"""Schemathesis against the served OpenAPI document: every operation, positive and negative data,
as hubA, as hubB aiming at hubA's services, and with missing or wrong credentials."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import schemathesis
from hypothesis import assume, given
from hypothesis import strategies as st
from requests.models import RequestEncodingMixin
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from outpost.routes.openapi import openapi_document
from tests.fuzz.harness import (
    BASE_URL,
    FUZZ,
    HUBS,
    Fuzz,
    basic,
    framework_answer,
    unsafe_overrides,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())}
PUBLIC = {label for label, op in OPERATIONS.items() if op.definition.raw.get("security") == []}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
STRATEGIES = {
    (label, mode): op.as_strategy(generation_mode=mode) for label, op in OPERATIONS.items() for mode in GenerationMode
}

# What a caller without valid credentials may send.
HOSTILE_AUTH = st.one_of(
    st.none(),
    st.just("keep"),  # whatever schemathesis generated
    st.sampled_from(
        [
            basic("hubA", "wrong"),
            basic("hubA", ""),
            basic("nobody", "password-a"),
            basic("hubB", "password-a"),
            "Basic",
            "Basic ",
            "Basic !!!",
            "basic " + "A" * 10000,
            "Bearer password-a",
            "Digest x",
            "hubA",
        ]
    ),
    st.binary(max_size=64).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    st.binary(max_size=64),  # raw header bytes, not even latin-1 text
)


def as_request(case: Case) -> tuple[str, str, list[tuple[str, str]], bytes | None]:
    """A schemathesis case as method, URL, headers and body, encoded as schemathesis would send it."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    url = kwargs["url"]
    query = RequestEncodingMixin._encode_params(kwargs.get("params") or {})
    if query:
        url = f"{url}?{query}"
    body: bytes | None = None
    if "json" in kwargs:
        body = json.dumps(kwargs["json"]).encode()
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        body = data if isinstance(data, bytes) else str(data).encode()
    headers = [(k, v) for k, v in kwargs["headers"].items() if k.lower() not in ("connection", "content-length")]
    return kwargs["method"], url, headers, body


def aimed_at(case: Case, fuzz: Fuzz, hub: str, pick: Any) -> None:
    """Sometimes aim a generated path at a seeded service: another hub's, or (for a read) our own."""
    if "name" not in case.path_parameters:
        return
    own = [s for s in fuzz.seeds if s.hub == hub]
    other = [s for s in fuzz.seeds if s.hub != hub]
    targets = other + (own if case.method.upper() == "GET" else [])
    if "start_id" not in case.path_parameters:  # `/services/` is the listing, not a default server
        targets = [s for s in targets if s.name]
    seed = pick(st.none() | st.sampled_from(targets))
    if seed is None:
        return
    case.path_parameters["name"] = seed.name
    if "start_id" in case.path_parameters and pick(st.booleans()):
        case.path_parameters["start_id"] = seed.start_id


async def cleanup_after_start(fuzz: Fuzz, method: str, url: str, status: int) -> None:
    if method == "POST" and url.startswith(f"{BASE_URL}/services") and status in (200, 202):
        await fuzz.stop_unseeded()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
@pytest.mark.parametrize("hub", sorted(HUBS))
@pytest.mark.parametrize("label", sorted(OPERATIONS))
@FUZZ
@given(data=st.data())
async def test_operation_with_valid_credentials(
    fuzz: Fuzz, label: str, hub: str, mode: GenerationMode, data: st.DataObject
) -> None:
    if mode.is_negative and label in PUBLIC:
        pytest.skip("nothing to negate: no parameters, no body, no credentials")
    case = data.draw(STRATEGIES[(label, mode)])
    aimed_at(case, fuzz, hub, data.draw)
    assume(not unsafe_overrides(case.body))
    method, url, headers, body = as_request(case)
    response = await fuzz.send(method, url, hub=hub, headers=headers, content=body)
    if framework_answer(response):
        return
    if mode.is_positive:
        case.validate_response(response, checks=CHECKS)
    else:
        case.validate_response(response, checks=[not_a_server_error, content_type_conformance])
    if response.status_code == 200 and "name" in case.path_parameters and method == "GET":
        # Only a seeded service of this hub can be found: the fuzzer's own starts are stopped at once.
        assert [s for s in fuzz.seeds if s.hub == hub and s.name == case.path_parameters["name"]], (url, response.text)
        assert response.json()["status"] is None
    await cleanup_after_start(fuzz, method, url, response.status_code)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
@FUZZ
@given(data=st.data(), authorization=HOSTILE_AUTH)
async def test_operation_without_valid_credentials(
    fuzz: Fuzz, label: str, data: st.DataObject, authorization: str | bytes | None
) -> None:
    case = data.draw(STRATEGIES[(label, GenerationMode.POSITIVE)])
    aimed_at(case, fuzz, "", data.draw)
    method, url, headers, body = as_request(case)
    if authorization != "keep":
        headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
        if authorization is not None:
            headers.append(("Authorization", authorization))  # type: ignore[arg-type]
    response = await fuzz.send(method, url, hub=None, headers=headers, content=body)
    if framework_answer(response):
        return
    if label in PUBLIC:
        assert response.status_code == 200
        if authorization is None:  # schemathesis re-reads the request headers, which must be valid then
            case.validate_response(response, checks=CHECKS)
    elif response.status_code == 429:  # a rate limit on failed logins from this source is fine
        assert response.json()["error"], response.text
    elif response.status_code == 404:  # routing comes first: a path with a '/' in a segment
        assert response.json()["error"] == "UnknownRoute", response.text
    else:  # /metrics wants the scraper's bearer token, the rest a hub's Basic credentials
        scheme, error = ("Bearer", "ScraperUnauthorized") if label == "GET /metrics" else ("Basic", "Unauthorized")
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith(scheme)
        assert response.json()["error"] == error

"""Hostile input beyond what the OpenAPI document describes: start bodies with dangerous values,
bytes that are not JSON, bodies around the size limit, odd paths, headers and methods."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzz.harness import (
    FUZZ,
    FUZZ_OVERRIDES,
    MAX_BODY_BYTES,
    Fuzz,
    basic,
    unsafe_overrides,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

JSON_HEADERS = {"Content-Type": "application/json"}
HUB_ENV = (
    "JUPYTERHUB_API_TOKEN",
    "JUPYTERHUB_API_URL",
    "JUPYTERHUB_USER",
    "JUPYTERHUB_USER_ID",
    "JUPYTERHUB_SERVICE_PREFIX",
    "JUPYTERHUB_EVENTS_URL",
    "JUPYTERHUB_SETUPTUNNEL_URL",
    "JUPYTERHUB_FLAVORS_UPDATE_URL",
    "JUPYTERHUB_FLAVORS_UPDATE_TOKEN",
)
ROUTES = [
    ("GET", "/ping"),
    ("GET", "/openapi.json"),
    ("GET", "/services"),
    ("POST", "/services"),
    ("GET", "/services/x"),
    ("DELETE", "/services/x"),
    ("GET", "/services/x/1"),
    ("DELETE", "/services/x/1"),
    ("GET", "/flavors"),
    ("POST", "/userflavors"),
]

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Text that is awkward in URLs, headers, environments and file names.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "\n",
            "é",
            "tök",
            "http://[",
            "http://[::1",
            "http://exa mple.org/",
            "http://127.0.0.1:9/x",
            "://",
            "http://" + "a" * 64 + ".org/",
            "http://x/" + "a" * 20000,
            "💥" * 50,
            "../../etc/passwd",
            "a=b",
            "%2F",
        ]
    ),
)
env = st.dictionaries(st.sampled_from(HUB_ENV) | st.text(max_size=12), nasty_text, max_size=6)
start_id = st.one_of(st.text(max_size=12), st.integers(), st.sampled_from(["0", "", "a/b", "x" * 256]), json_values)
user_options = st.fixed_dictionaries({}, optional={"start_id": start_id, "flavor": json_values}) | json_values
misc = st.dictionaries(st.sampled_from(FUZZ_OVERRIDES) | st.text(max_size=8), json_values)
start_bodies = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=20), st.sampled_from(["", "a/b", "x" * 255, "x" * 256]), json_values)},
    optional={
        "env": env | json_values,
        "user_options": user_options,
        "misc": misc | json_values,
        "certs": st.dictionaries(st.sampled_from(["keyfile", "certfile", "cafile"]), nasty_text) | json_values,
        "internal_trust_bundles": st.dictionaries(st.text(max_size=8), nasty_text) | json_values,
        "authentication": json_values,
    },
)


@st.composite
def nearly_valid_start_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A start as the OutpostSpawner sends it, with a few hostile values in the places that reach
    the hub callbacks, the server's environment, the backend options and the store."""
    user = draw(st.sampled_from(["fuzz-user", ""]) | st.text(max_size=10))
    env: dict[str, Any] = {
        "JUPYTERHUB_API_TOKEN": "fuzz-token",
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_USER_ID": "1",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/fuzz/",
        "JUPYTERHUB_EVENTS_URL": "http://hub.invalid/events",
        "JUPYTERHUB_SETUPTUNNEL_URL": "http://hub.invalid/tunnel",
        "JUPYTERHUB_FLAVORS_UPDATE_URL": "http://hub.invalid/flavors",
        "JUPYTERHUB_FLAVORS_UPDATE_TOKEN": "fuzz-flavors-token",
    }
    env.update(draw(st.dictionaries(st.sampled_from(HUB_ENV) | st.text(max_size=10), nasty_text, max_size=3)))
    body: dict[str, Any] = {
        "name": draw(st.text(max_size=20) | st.sampled_from(["", "fuzz"])),
        "env": env,
        "user_options": {"start_id": draw(st.text(max_size=12) | st.integers() | st.just("1"))},
        "misc": draw(st.dictionaries(st.sampled_from(FUZZ_OVERRIDES), json_values, max_size=2) | st.just({})),
        "certs": draw(st.just({}) | st.dictionaries(st.sampled_from(["keyfile", "certfile", "cafile"]), nasty_text)),
    }
    return body


async def start(fuzz: Fuzz, body: bytes, headers: dict[str, str], hub: str = "hubA") -> Any:
    response = await fuzz.send("POST", "/services", hub=hub, headers=headers, content=body)
    if response.status_code in (200, 202):
        await fuzz.stop_unseeded()
    return response


@FUZZ
@given(body=start_bodies, mode=st.sampled_from(["sync", "async", "ASYNC", ""]))
async def test_hostile_start_bodies(fuzz: Fuzz, body: dict[str, Any], mode: str) -> None:
    """Whatever the hub sends, the answer is a documented one, and nothing is left behind."""
    assume(not unsafe_overrides(body))
    response = await start(fuzz, json.dumps(body).encode(), {**JSON_HEADERS, "execution-type": mode})
    assert response.status_code in {200, 202, 400, 409, 413, 419}, response.text


@pytest.mark.parametrize("misc", [{"cmd": ["true"]}, {"ip": "127.0.0.1"}, {"port": 1}, {"notebook_dir": "/"}])
async def test_overrides_outside_the_policy_are_refused(fuzz: Fuzz, misc: dict[str, Any]) -> None:
    body = {"name": "override", "user_options": {"start_id": "1"}, "misc": misc}
    response = await start(fuzz, json.dumps(body).encode(), JSON_HEADERS)
    assert response.status_code == 419 and response.json()["class"] == "OverrideNotAllowed", response.text


@FUZZ
@given(body=nearly_valid_start_bodies(), mode=st.sampled_from(["sync", "async"]))
async def test_starts_with_hostile_values(fuzz: Fuzz, body: dict[str, Any], mode: str) -> None:
    """Hostile values in the env (hub URLs, tokens, the server's variables), misc and certs."""
    assume(not unsafe_overrides(body))
    response = await start(fuzz, json.dumps(body).encode(), {**JSON_HEADERS, "execution-type": mode})
    assert response.status_code in {200, 202, 400, 409, 413, 419}, response.text


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.sampled_from(
            [
                b"",
                b"{",
                b"\xef\xbb\xbf{}",
                b'{"name": NaN}',
                b'{"name": "x", "misc": {"start_timeout": Infinity}}',
                b'{"name": "a", "name": "b"}',
                b"1e999999",
                b'{"name": "' + b"\\ud800" + b'"}',
                b"\x00" * 64,
                b"[" * 50000 + b"]" * 50000,
                b'{"a":' * 50000 + b"1" + b"}" * 50000,
                b"9" * 4300,  # the longest integer Python parses by default
            ]
        ),
    ),
    path=st.sampled_from(["/services", "/userflavors"]),
)
async def test_bytes_that_are_not_a_start_body(fuzz: Fuzz, raw: bytes, path: str) -> None:
    try:
        body = json.loads(raw)
        assume(not unsafe_overrides(body))
    except (ValueError, RecursionError):
        pass
    response = await fuzz.send("POST", path, hub="hubA", headers=JSON_HEADERS, content=raw)
    assert response.status_code in {200, 202, 400, 409, 413, 419}, response.text
    if response.status_code in (200, 202) and path == "/services":
        await fuzz.stop_unseeded()


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("size", [MAX_BODY_BYTES - 1, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 4 * MAX_BODY_BYTES])
@pytest.mark.parametrize("framing", ["content-length", "chunked", "lying-length"])
async def test_body_size_limit_on_every_route(fuzz: Fuzz, method: str, path: str, size: int, framing: str) -> None:
    """Up to `max_body_bytes` a body is read (and parsed where a route parses it); past it, 413."""
    body = json.dumps({"name": "a/b", "pad": ""}).encode()  # valid JSON, but not a valid start
    body = body[:-2] + b"x" * (size - len(body)) + body[-2:]
    assert len(body) == size and json.loads(body)
    headers: dict[str, str] = dict(JSON_HEADERS)
    content: Any = body
    if framing == "lying-length":
        headers["Content-Length"] = "10"

    if framing == "chunked":

        async def chunks() -> AsyncIterator[bytes]:
            for offset in range(0, size, 4096):
                yield body[offset : offset + 4096]

        content = chunks()
    response = await fuzz.send(method, path, hub="hubA", headers=headers, content=content)
    if size > MAX_BODY_BYTES:
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "BodyTooLarge"
    else:
        assert response.status_code != 413, response.text
        if (method, path) == ("POST", "/services"):
            assert response.status_code == 400 and "name" in response.json()["message"], response.text


segments = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "%",
            "%2F",
            "%00",
            "\x00",
            "?",
            "#",
            "zebra-seed-q7x",
            "4242001",
            "4242002",
            "narwhal-seed-k5w",
            "8080881",
            "x" * 5000,
            "é" * 300,
            "\u202e",
            "\ufeff",
        ]
    ),
)


@FUZZ
@given(
    prefix=st.sampled_from(["/services", "/flavors", "/ping", "/userflavors", "/openapi.json", "", "/service"]),
    parts=st.lists(segments, max_size=4),
    encode_slashes=st.booleans(),
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]),
    hub=st.sampled_from(["hubA", "hubB", None]),
    query=st.sampled_from(["", "?collect_logs=true", "?collect_logs=" + "x" * 3000, "?a=%ff%fe", "?=&&=="]),
)
async def test_odd_paths(
    fuzz: Fuzz, prefix: str, parts: list[str], encode_slashes: bool, method: str, hub: str | None, query: str
) -> None:
    """Any path: a JSON answer, never 5xx; another hub's service names in the path find nothing."""
    own = {s.name for s in fuzz.seeds if s.hub == hub} | {s.start_id for s in fuzz.seeds if s.hub == hub}
    if method == "DELETE" and own & set(parts):
        parts = [p for p in parts if p not in own]  # a hub may stop its own seeded services; not here
    path = prefix + "".join("/" + quote(p, safe="" if encode_slashes else "/") for p in parts) + query
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    headers = {} if hub else {"Authorization": basic("hubA", "nope")}
    response = await fuzz.send(method, path, hub=hub, headers=headers, content=body)
    if response.status_code in (200, 202) and method == "POST" and prefix == "/services":
        await fuzz.stop_unseeded()


@pytest.mark.parametrize(
    ("path", "hub", "status"),
    [
        ("/services//4242002", "hubB", 404),  # hubA's default server, asked for by hubB
        ("/services/zebra-seed-q7x/4242001", "hubB", 404),
        ("/services/zebra-seed-q7x%2F4242001", "hubB", 404),  # an encoded slash decodes to a separator
        ("/services/zebra-seed-q7x%2F4242001", "hubA", 200),
        ("/services/narwhal-seed-k5w/8080881", "hubA", 404),
        ("/services/%7A%65%62%72%61-seed-q7x/4242001", "hubA", 200),  # %-encoded plain letters
        ("/services/ZEBRA-SEED-Q7X/4242001", "hubA", 404),  # names are case-sensitive
        ("/services/zebra-seed-q7x%00/4242001", "hubA", 404),
        ("/services/zebra-seed-q7x/4242001%20", "hubA", 404),
        ("/services/" + "x" * 1_000_000 + "/1", "hubA", 404),  # a very long name
        ("/services/" + "é" * 20000, "hubA", 404),
        ("/services/%F0%9F%92%A5/%F0%9F%92%A5", "hubA", 404),
        ("/services/%ff%fe/1", "hubA", 404),  # not UTF-8
    ],
)
async def test_paths_aimed_at_seeded_services(fuzz: Fuzz, path: str, hub: str, status: int) -> None:
    for method in ("GET", "DELETE") if status == 404 else ("GET",):
        response = await fuzz.send(method, path, hub=hub)
        assert response.status_code == status, (method, response.text)


@FUZZ
@given(
    extra=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "Authorization",
                    "execution-type",
                    "Content-Type",
                    "Content-Length",
                    "X-Forwarded-For",
                    "X-Request-Id",
                    "Host",
                    "Accept",
                    "Transfer-Encoding",
                ]
            )
            | st.text("abcXYZ-_", min_size=1, max_size=12),
            st.binary(max_size=80)
            | st.sampled_from(
                [b"", b"\x00", b"\r\n", b"async", b"ASYNC", b"\xff" * 8, b"Basic " + b"QQ==" * 5000, b"x" * 100_000]
            ),
        ),
        max_size=5,
    ),
    route=st.sampled_from(ROUTES),
    hub=st.sampled_from(["hubA", "hubB", None]),
)
async def test_hostile_headers(
    fuzz: Fuzz, extra: list[tuple[str, bytes]], route: tuple[str, str], hub: str | None
) -> None:
    method, path = route
    headers: list[tuple[str | bytes, str | bytes]] = list(extra)
    if hub is not None:
        headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
        headers.append(("Authorization", basic(hub)))
    body = b'{"name": "a/b"}' if method == "POST" else None
    response = await fuzz.send(method, path, hub=None, identity=hub, headers=headers, content=body)
    if response.status_code in (200, 202) and (method, path) == ("POST", "/services"):
        await fuzz.stop_unseeded()


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "BREW"])
@pytest.mark.parametrize("path", sorted({p for _, p in ROUTES}) + ["/", "/robots.txt", "/favicon.ico"])
async def test_other_methods(fuzz: Fuzz, method: str, path: str) -> None:
    response = await fuzz.send(method, path, hub="hubA")
    assert response.status_code in {404, 405}, response.text

"""Header bytes schemathesis and httpx never send (non-ASCII and control bytes, NUL, folded lines,
repeats, huge lines), written to a real socket of a real `outpost dev`. Every answer is below 500,
is JSON when our code gave it (the HTTP parser's own 400 and the framework's 404/405 are plain
text), and the outpost's log never shows a traceback. Reaching the real server matters: the
in-process ASGI tests never meet the HTTP parser, and httpx refuses most of these bytes."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import FUZZ, STATS
from tests.security.stack import Stack, launch, shut_down
from tests.support.raw_http import Header, RawAnswer, request_bytes, send

ROUTES = [
    (b"GET", b"/ping"),
    (b"GET", b"/services"),
    (b"POST", b"/services"),
    (b"GET", b"/services/x/1"),
    (b"DELETE", b"/services/x/1"),
    (b"GET", b"/flavors"),
    (b"POST", b"/userflavors"),
]
NAMES = [b"Authorization", b"X-Request-Id", b"execution-type", b"X-Forwarded-For", b"Content-Type", b"Accept", b"Host"]
ODD = [b"\x00", b"a\x00b", b"\r", b"\n", b"x\r\n y", b"x\r\n\tfolded", b"\x7f", b"\x1b[2J", b"\xff" * 8, b" ", b""]

values = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=64).map(lambda raw: bytes(byte | 0x80 for byte in raw)),  # latin-1 only
    st.text(max_size=20).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from(ODD),
    st.sampled_from([b"Basic ", b"Basic QQ\xe9==", b"Basic " + b"QUFB" * 1500, b"basic aHViQTp4"]),
    st.integers(4_000, 40_000).map(lambda n: b"a" * n),  # past h11's 16 KiB: the parser's answer
)
headers = st.one_of(
    st.tuples(st.sampled_from(NAMES) | st.binary(min_size=1, max_size=16), values),
    # Never a plain length above what is sent: the server would wait for a body that never comes.
    st.tuples(st.just(b"Content-Length"), st.sampled_from([b"\xb2", b"-1", b"1, 2", b"0x10", b"9" * 40, b"0", b" 0"])),
    st.tuples(st.just(b"Transfer-Encoding"), st.sampled_from([b"gzip", b"\xff", b"chunked, identity", b"identity"])),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = launch(tmp_path_factory.mktemp("raw-headers"), f"fuzz-{secrets.token_hex(4)}")
    yield running
    shut_down(running)


def check(stack: Stack, answer: RawAnswer | None, what: str) -> None:
    assert answer is not None, f"no answer to {what}"
    STATS.requests += 1
    STATS.statuses[answer.status] += 1
    assert answer.status < 500, (what, answer)
    if answer.content_type.startswith(b"application/json"):
        json.loads(answer.body)
    else:  # not ours: the HTTP parser's refusal, or the framework's router (README "Errors")
        assert answer.status in (400, 404, 405, 413, 431), (what, answer)
        STATS.framework_answers += answer.status in (404, 405)
    assert "Traceback" not in stack.log(), stack.proc.tail()


@FUZZ
@given(route=st.sampled_from(ROUTES), extra=st.lists(headers, max_size=6), as_hub=st.booleans(), repeat=st.booleans())
def test_raw_header_bytes(
    server: Stack, route: tuple[bytes, bytes], extra: list[Header], as_hub: bool, repeat: bool
) -> None:
    method, path = route
    sent = list(extra) + (extra[:1] if repeat else [])  # a repeated header
    if as_hub:
        sent.insert(0, (b"Authorization", server.tenants["hubA"].auth["Authorization"].encode()))
    check(
        server,
        send(server.api_port, request_bytes(method, path, sent), timeout=20),
        f"{method!r} {path!r} {sent!r}"[:500],
    )
    server.proc.check_alive()


def test_the_server_still_serves_after_the_fuzzing(server: Stack) -> None:
    with server.api("hubA") as api:
        assert api.get("/services").status_code == 200

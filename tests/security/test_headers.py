"""Headers no client library sends, over a real socket to `outpost dev`: each answered with a JSON
4xx or ignored, never a 500, never a traceback in the outpost's log."""

from __future__ import annotations

import base64
import re

import pytest

from tests.e2e.processes import wait_until
from tests.security.stack import Stack
from tests.support.raw_http import Header, RawAnswer, request_bytes, send


def ask(stack: Stack, headers: list[Header], method: bytes = b"GET", path: bytes = b"/services") -> RawAnswer:
    answer = send(stack.api_port, request_bytes(method, path, headers))
    assert answer is not None, "the server closed without answering"
    return answer


def basic(stack: Stack, hub: str) -> bytes:
    return stack.tenants[hub].auth["Authorization"].encode()


def assert_no_traceback(stack: Stack) -> None:
    assert "Traceback" not in stack.log(), stack.proc.tail()


@pytest.mark.parametrize(
    "value",
    [
        b"Basic QQ\xe9==",  # the non-ASCII byte: was a 500 with a traceback
        b"Basic \xff\xfe\xfd",
        b"Basic " + base64.b64encode("hubA:pässwörd".encode("latin-1")),  # not UTF-8 once decoded
        b"\xc3\xa9 x",
        b"Basic " + b"Q" * 6000,  # over-long: refused before it is decoded
        b"Basic " + base64.b64encode(b"\x00" * 40),
        b"basic",
        b"",
    ],
    ids=["non-ascii", "latin-1", "not-utf8", "odd-scheme", "long", "nul", "no-credentials", "empty"],
)
def test_malformed_authorization_is_a_json_401(stack: Stack, value: bytes) -> None:
    answer = ask(stack, [(b"Authorization", value)])
    assert answer.status == 401, answer
    assert answer.json()["error"] == "Unauthorized"
    assert answer.header(b"www-authenticate") == b'Basic realm="outpost"'
    assert_no_traceback(stack)


def test_two_authorization_headers_are_believed_neither(stack: Stack) -> None:
    """Proxies differ on which of two counts; even two valid ones answer 401."""
    own = basic(stack, "hubA")
    for pair in ([own, own], [own, basic(stack, "hubB")], [b"Basic eA==", own]):
        answer = ask(stack, [(b"Authorization", value) for value in pair])
        assert answer.status == 401, answer
        assert answer.json()["message"] == "more than one Authorization header"
    assert ask(stack, [(b"Authorization", own)]).status == 200
    assert_no_traceback(stack)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X-Request-Id", "ünïcode".encode("latin-1"))],
        [(b"X-Request-Id", b"a" * 5000)],
        [(b"X-Request-Id", b"one"), (b"X-Request-Id", b"two")],
        [(b"X-Request-Id", b"")],
        [(b"execution-type", b"\xe4sync")],
        [(b"execution-type", b"async"), (b"execution-type", b"sync")],
        [(b"X-Forwarded-For", b"\xff, 1.2.3.4:99999, [::1")],
        [(b"Accept", b"\x80" * 3000)],
        [(b"X-" + b"a" * 200, b"b" * 8000)],
    ],
    ids=["rid-latin1", "rid-long", "rid-twice", "rid-empty", "exec-latin1", "exec-twice", "xff-junk", "accept", "long"],
)
def test_odd_headers_are_ignored(stack: Stack, headers: list[Header]) -> None:
    answer = ask(stack, [(b"Authorization", basic(stack, "hubA")), *headers])
    assert answer.status == 200, answer
    assert answer.json() == []
    # The request id in the log and the answer is the caller's only when it is sane; else ours.
    rid = answer.header(b"x-request-id") or b""
    assert re.fullmatch(rb"[0-9a-f]{32}|one", rid), rid
    assert_no_traceback(stack)


@pytest.mark.parametrize("length", [b"\xb2", b"9" * 5000, b"-1", b"0x10", b"1, 2"])
def test_odd_content_length_never_reaches_our_code_as_a_500(stack: Stack, length: bytes) -> None:
    """The HTTP parser refuses these before the application (a plain 400 of the server's own)."""
    headers = [(b"Authorization", basic(stack, "hubA")), (b"Content-Type", b"application/json")]
    answer = ask(stack, [*headers, (b"Content-Length", length)], b"POST", b"/services")
    assert answer.status == 400, answer
    assert_no_traceback(stack)


def test_a_client_that_leaves_mid_body_leaves_no_traceback(stack: Stack) -> None:
    """Was a logged 'unexpected error' (starlette's ClientDisconnect) for every such client."""

    def answered_400() -> int:
        found = re.search(
            r'outpost_requests_total\{method="POST",route="/services",status="400"\} (\S+)', stack.metrics()
        )
        return int(float(found.group(1))) if found else 0

    before = answered_400()
    headers = [(b"Authorization", basic(stack, "hubA")), (b"Content-Type", b"application/json")]
    for length in (b"100", b"1, 1"):  # h11 takes "1, 1" for 1
        send(
            stack.api_port,
            request_bytes(b"POST", b"/services", [*headers, (b"Content-Length", length)], b"{"),
            leave=True,
        )
    wait_until("two incomplete requests answered", lambda: answered_400() == before + 2, timeout=30)
    assert_no_traceback(stack)

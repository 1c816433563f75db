"""Small ways a hub could leave traces or noise with a start the outpost refuses, against `outpost dev`:
an environment the OS cannot pass, a port outside 0-65535, a path functions-framework's router cannot
match. Each is refused with a JSON 4xx, leaves no directory behind and no traceback in the log."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.security.stack import Stack, start_body
from tests.support.raw_http import request_bytes, send


def server_dirs(stack: Stack) -> list[Path]:
    """The local backend's per-start directories (not the homes, not the kept output of failed starts)."""
    servers = stack.data_dir / "servers"
    return [p for p in servers.iterdir() if p.name not in ("home", "failed")] if servers.exists() else []


@pytest.mark.parametrize(
    "env",
    [{"JUPYTERHUB_NOTE": "a\x00b"}, {"JUPYTERHUB_A=B": "x"}, {"JUPYTERHUB_NOTE": "\ud800"}],
    ids=["nul-in-value", "equals-in-name", "lone-surrogate"],
)
def test_an_environment_the_os_refuses_is_a_400_that_leaves_no_directory(clean: Stack, env: dict[str, str]) -> None:
    """Was: 400, but `servers/<hash>/` stayed, one per server name the hub invents."""
    before, answers = server_dirs(clean), []
    for n in range(3):
        body = start_body(name=f"badenv{n}")
        body["env"].update(env)
        with clean.api("hubA") as api:  # json.dumps escapes a lone surrogate, as a hub's JSON may
            response = api.post("/services", content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        answers.append(response.json())
    assert server_dirs(clean) == before
    for answer in answers:
        assert answer["error"] == "InvalidBody" and "cannot be passed to a process" in answer["message"]
    assert clean.nothing_created()
    assert "Traceback" not in clean.log()


@pytest.mark.parametrize("port", [-1, 70000, 2**40])
def test_a_port_outside_the_range_is_a_400_before_any_process(clean: Stack, port: int) -> None:
    """Was: a process started, a traceback logged, then 419."""
    before = server_dirs(clean)
    body = start_body(name="badport")
    body["misc"]["port"] = port
    response = clean.start("hubA", body)  # hubA may override `port`
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "InvalidBody" and "port" in response.json()["message"]
    assert server_dirs(clean) == before and clean.nothing_created()
    assert "Traceback" not in clean.log()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        (b"GET", b"/services%0a", 404),  # a final newline: a regex's "$" matched before it (was 200)
        (b"GET", b"/services%0aX", 404),  # a decoded newline: functions-framework's `{path:path}` misses it
        (b"GET", b"/%0a/x", 404),
        (b"GET", b"/robots.txt", 404),  # kept by functions-framework for itself
        (b"GET", b"/favicon.ico", 404),
        (b"TRACE", b"/services", 405),  # a method functions-framework does not route
    ],
)
def test_every_404_and_405_is_json(stack: Stack, method: bytes, path: bytes, status: int) -> None:
    """Was: a plain-text `Not Found` / `Method Not Allowed` from functions-framework's router."""
    answer = send(
        stack.api_port,
        request_bytes(method, path, [(b"Authorization", stack.tenants["hubA"].auth["Authorization"].encode())]),
    )
    assert answer is not None and answer.status == status, answer
    assert answer.json()["error"] == ("UnknownRoute" if status == 404 else "MethodNotAllowed")


def test_a_404_on_a_kept_alive_connection_leaves_the_connection_usable(stack: Stack) -> None:
    """The replaced answer is whole: the next request on the same connection is read and answered."""
    with socket.create_connection(("127.0.0.1", stack.api_port), timeout=10) as conn:
        auth = stack.tenants["hubA"].auth["Authorization"]
        for path in ("/services%0aX", "/services"):
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: outpost\r\nAuthorization: {auth}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            status = int(head.split(b" ", 2)[1])
            length = int(
                next(
                    line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
                )
            )
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(4096)
            assert status == (404 if "%0a" in path else 200), head

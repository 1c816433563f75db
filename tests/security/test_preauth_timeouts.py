"""What a connection that does not finish is given: the SSH daemon closes one that has not logged in
within sshLoginGraceSeconds; the API one that owes its headers past apiHeaderTimeoutSeconds (sent
nothing, half of them, or a byte at a time) or its body past apiBodyTimeoutSeconds, while a client
that finishes in time is answered, also on a kept-alive connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.security.stack import Stack

# One attacker address per test: the log says each source once a minute.
ATTACKERS = {"ssh": "127.0.0.5", "nothing": "127.0.0.6", "half": "127.0.0.7", "slow": "127.0.0.8", "body": "127.0.0.9"}
DEADLINE = 30  # seconds a test waits for the server to close; the limits below are 1-2 s


@pytest.fixture(scope="module")
def stack_values() -> dict[str, Any]:
    return {"sshLoginGraceSeconds": 2, "apiHeaderTimeoutSeconds": 1, "apiBodyTimeoutSeconds": 1}


async def connect(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (failing after DEADLINE seconds)."""
    received = b""
    async with asyncio.timeout(DEADLINE):
        while chunk := await reader.read(65536):
            received += chunk
    return received


@pytest.mark.asyncio
async def test_ssh_closes_a_connection_that_never_logs_in(stack: Stack) -> None:
    reader, writer = await connect(stack.ssh_port, ATTACKERS["ssh"])
    writer.write(b"SSH-2.0-idle\r\n")
    received = await read_until_closed(reader)
    writer.close()
    assert received.startswith(b"SSH-2.0-OutpostSSHD")  # it did talk: closed by the grace time, not refused


@pytest.mark.asyncio
@pytest.mark.parametrize("sent", [b"", b"GET /services HTTP/1.1\r\nHost: outpost\r\n"], ids=["nothing", "half"])
async def test_api_closes_a_connection_without_headers(stack: Stack, sent: bytes) -> None:
    source = ATTACKERS["half" if sent else "nothing"]
    reader, writer = await connect(stack.api_port, source)
    writer.write(sent)
    assert await read_until_closed(reader) == b""
    writer.close()
    assert f"connection closed source={source}: no complete request headers within 1s" in stack.log()


@pytest.mark.asyncio
async def test_api_closes_headers_sent_a_byte_at_a_time(stack: Stack) -> None:
    """Slowloris: every byte resets no clock; the headers' deadline runs from the connection."""
    reader, writer = await connect(stack.api_port, ATTACKERS["slow"])

    async def trickle() -> None:
        for byte in b"GET /services HTTP/1.1\r\nHost: outpost\r\n" + b"X-Slow: y\r\n" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    sending = asyncio.create_task(trickle())
    try:
        assert await read_until_closed(reader) == b""
    finally:
        sending.cancel()
        writer.close()


@pytest.mark.asyncio
async def test_api_closes_a_connection_that_owes_its_body(stack: Stack) -> None:
    reader, writer = await connect(stack.api_port, ATTACKERS["body"])
    auth = stack.tenants["hubA"].auth["Authorization"]
    writer.write(
        f"POST /services HTTP/1.1\r\nHost: outpost\r\nAuthorization: {auth}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
    )
    await read_until_closed(reader)
    writer.close()
    assert f"connection closed source={ATTACKERS['body']}: no complete request body within 1s" in stack.log()
    assert stack.record_keys() == set()


@pytest.mark.asyncio
async def test_api_answers_requests_on_a_kept_alive_connection(stack: Stack) -> None:
    """The deadlines cover what the client owes, not the connection: two polls, one connection."""
    reader, writer = await connect(stack.api_port)
    auth = stack.tenants["hubA"].auth["Authorization"]
    request = f"GET /services HTTP/1.1\r\nHost: outpost\r\nAuthorization: {auth}\r\n\r\n".encode()
    for _ in range(2):
        writer.write(request)
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert status.startswith(b"HTTP/1.1 200 "), status
        length = int(status.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert await reader.readexactly(length) == b"[]"
    writer.close()

"""HTTP/1.1 over a bare socket: header bytes no HTTP client library lets a test send (non-ASCII,
control characters, folded lines, repeats, NUL), and the answer read back as it came."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

Header = tuple[bytes, bytes]


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: list[Header]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[0] if found else None

    @property
    def content_type(self) -> bytes:
        return self.header(b"content-type") or b""

    def json(self) -> Any:
        assert self.content_type.startswith(b"application/json"), (self.status, self.content_type, self.body[:200])
        return json.loads(self.body)


def request_bytes(method: bytes, path: bytes, headers: list[Header], body: bytes = b"") -> bytes:
    """A request exactly as given: header lines joined by CRLF, no validation, no normalisation."""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: outpost", b"Connection: close"]
    lines += [key + b": " + value if key else value for key, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send(
    port: int, raw: bytes, *, source: str | None = None, timeout: float = 30, leave: bool = False
) -> RawAnswer | None:
    """Send `raw` from `source` (a loopback address), read until the server closes; None when it
    closed without answering. `leave` closes right after sending, as a client that goes away."""
    with socket.create_connection(("127.0.0.1", port), timeout, (source, 0) if source else None) as conn:
        try:
            conn.sendall(raw)  # no half-close: uvicorn drops a request whose client sent EOF
        except OSError:  # the server refused and closed while we were still sending
            pass
        if leave:
            return None
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return parse(b"".join(chunks))


def parse(data: bytes) -> RawAnswer | None:
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in header_lines if b": " in line]
    answer = RawAnswer(int(status_line.split()[1]), headers, body)  # type: ignore[arg-type]
    if (answer.header(b"transfer-encoding") or b"").lower() == b"chunked":
        return RawAnswer(answer.status, answer.headers, _unchunk(body))
    return answer


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + rest[:size], rest[size + 2 :]
    return out

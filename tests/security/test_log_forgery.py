"""A hub cannot write lines into the outpost's log: what it chooses (a forward's destination host,
a server name, a start id) is escaped in every line that shows it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import wait_until
from tests.security.stack import Stack, start_body
from tests.sshd.helpers import exchange, free_port

FORGED = "forward opened hub=hubB service=victim/1 dest=127.0.0.1:1 peer=127.0.0.1:1"
LOG_LINE_START = ("20",)  # "%(asctime)s ...": every line the outpost's loggers write starts with the year


@pytest.fixture(scope="module")
def stack_values() -> dict[str, Any]:
    """Text logs, where a raw newline would start a line of its own (JSON lines escape by construction)."""
    return {"logFormat": "text"}


def lines_mentioning(stack: Stack, text: str) -> list[str]:
    return [line for line in stack.log().splitlines() if text in line]


@pytest.mark.parametrize("separator", ["\n", "\r", "\x1b[2K\r"], ids=["newline", "carriage-return", "ansi"])
def test_a_forward_to_a_host_with_control_characters_writes_one_escaped_line(
    clean: Stack, tmp_path: Path, separator: str
) -> None:
    host = f"evil{separator}{FORGED}"
    client = clean.ssh("hubA", tmp_path / "ssh")
    assert asyncio.run(client.start_master()).returncode == 0, client.log()
    local = free_port()
    before = len(lines_mentioning(clean, "forward refused"))
    result = asyncio.run(client.mux("forward", f"-L127.0.0.1:{local}:[{host}]:22"))
    assert result.returncode == 0, result.stderr
    assert asyncio.run(exchange(local, b"hello")) == b""  # refused: no data
    wait_until("the refusal line", lambda: len(lines_mentioning(clean, "forward refused")) > before, timeout=10)
    asyncio.run(client.mux("exit"))
    (refused,) = lines_mentioning(clean, "forward refused")[before:]
    escaped = {"\n": "\\n", "\r": "\\r", "\x1b[2K\r": "\\u001b[2K\\r"}[separator]
    assert f'dest="evil{escaped}{FORGED}":22' in refused
    assert "reason=not-a-service" in refused
    # No line of the log starts with anything but a timestamp, and none holds a raw control byte.
    text = clean.log()
    assert "\r" not in text and "\x1b" not in text
    forged = [line for line in text.splitlines() if FORGED in line and not line.startswith(LOG_LINE_START)]
    assert forged == []
    assert not [line for line in text.splitlines() if line.startswith("forward opened")]


def test_hub_chosen_names_are_escaped_in_the_outposts_own_lines(clean: Stack) -> None:
    """Names with a newline cannot be started (no path could reach them); a start id can carry
    spaces and `=`: it must not pose as more fields of the 'started' line."""
    start_id = "7 hub=hubB"
    answer = clean.start("hubA", start_body("srv", start_id))
    assert answer.status_code == 200, answer.text
    wait_until("the started line", lambda: lines_mentioning(clean, "started hubA/srv/"), timeout=10)
    (line,) = lines_mentioning(clean, "started hubA/srv/")
    assert line.endswith('started hubA/srv/"7 hub=hubB"'), line

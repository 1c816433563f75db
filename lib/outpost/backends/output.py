"""What a server printed, fit to show: the last lines of its output that a failed start's message ends with.

The message reaches the hub's user (the 419's args[0], the failed progress event) and the outpost's console,
so the tail is bounded, holds no control characters (no terminal escapes, nothing that ends a log line) and
no line that holds a value of the server's environment (its API token, a password the hub passed).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

TAIL_LINES = 20
TAIL_CHARS = 2000
MESSAGE_CHARS = 4000  # a failure message with its tail, as the console shows it
LINE_CHARS = 300  # one line longer than this is cut: the lines before it still fit
# Values shorter than this are not looked for: "7" or "/" would remove lines at random, and no token is that short.
SECRET_MIN_CHARS = 6
READ_BYTES = 64 * 1024  # of a file's end: a server that printed megabytes costs no more to explain
_TERMINAL_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")


def _printable(line: str) -> str:
    """The line without terminal escapes (colours) and control or format characters (bidi overrides)."""
    line = _TERMINAL_ESCAPE.sub("", line).replace("\t", " ")
    return "".join(char for char in line if unicodedata.category(char) not in ("Cc", "Cf")).rstrip()


def clean_tail(lines: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    """The last lines worth showing: printable, without any line that holds one of `secrets`, non-empty,
    at most TAIL_LINES of them and TAIL_CHARS characters in all."""
    hidden = [value for value in secrets if len(value) >= SECRET_MIN_CHARS]
    shown: list[str] = []
    total = 0
    for raw in reversed(list(lines)):
        line = _printable(raw)
        if not line or any(value in raw or value in line for value in hidden):
            continue
        if len(line) > LINE_CHARS:
            line = line[:LINE_CHARS] + "..."
        if len(shown) == TAIL_LINES or total + len(line) > TAIL_CHARS:
            break
        shown.append(line)
        total += len(line) + 1
    return shown[::-1]


def file_tail(path: Path, secrets: Iterable[str] = ()) -> list[str]:
    """`clean_tail` of a file's last lines; nothing when it cannot be read."""
    try:
        with path.open("rb") as output:
            size = output.seek(0, 2)
            output.seek(max(0, size - READ_BYTES))
            text = output.read().decode(errors="replace")
    except OSError:
        return []
    lines = text.splitlines()
    if size > READ_BYTES:
        lines = lines[1:]  # the first one is cut
    return clean_tail(lines, secrets)


def with_tail(message: str, tail: list[str]) -> str:
    """A failure message that ends with the server's last output, when there is any."""
    if not tail:
        return f"{message} (no output to show)"
    return f"{message}. Its last output:\n" + "\n".join(tail)

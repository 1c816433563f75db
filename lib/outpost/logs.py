"""Structured JSON logs with a request id that follows a request into its background work."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets

from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PLAIN = re.compile(r"[\w.:@+,-]+", re.ASCII)
MAX_SHOWN_CHARS = 200


def escape(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """A value someone else chose (a hub's host, name, start id, user) as one token of a log line:
    as it is when plain, else JSON-quoted (newlines, quotes, spaces, `=` and non-ASCII escaped), so
    no value can end a line or pose as another field. Values longer than `limit` are cut and say so."""
    text = str(value)
    if _PLAIN.fullmatch(text) and len(text) <= limit:
        return text
    if len(text) > limit:
        return f"{json.dumps(text[:limit])}...({len(text)} chars)"
    return json.dumps(text)


def new_request_id(offered: str | None) -> str:
    """Keep a caller's X-Request-Id when it is sane (it ends up in logs), else make one."""
    value = offered if offered and _SANE_ID.fullmatch(offered) else secrets.token_hex(16)
    request_id.set(value)
    return value


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def formatter(json_format: bool) -> logging.Formatter:
    """The one log line format (docs/administration.md#logs): a JSON object per line, or its text form."""
    if json_format:
        return JsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")


def configure(json_format: bool) -> None:
    """Set up the root logger once per process, unless the host (a test runner, say) already did."""
    # httpx logs every request's URL at INFO; hub callback URLs name users and stay out of the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(formatter(json_format))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # Records skip what no formatter here prints: the caller's frame, the thread and the process
    # (a getpid() each); the logging HOWTO's "Optimization" settings.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False

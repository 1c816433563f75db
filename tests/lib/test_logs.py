"""Log lines: values a hub chose cannot end a line or pose as another field, request ids are ours or
sane, and the URLs httpx would log (hub callback URLs, naming users) stay out."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest

from outpost import logs
from outpost.logs import MAX_SHOWN_CHARS, escape, new_request_id


@pytest.mark.parametrize("value", ["hubA", "srv", "1", "alice@example.org", "10.0.0.5:8888", "a.b-c_d+e,f", 42])
def test_plain_values_stay_as_they_are(value: object) -> None:
    assert escape(value) == str(value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("evil\nINFO forged line", '"evil\\nINFO forged line"', id="newline"),
        pytest.param("a\rb", '"a\\rb"', id="carriage-return"),
        pytest.param("user=admin", '"user=admin"', id="poses-as-a-field"),
        pytest.param("two words", '"two words"', id="space"),
        pytest.param('say "hi"', '"say \\"hi\\""', id="quotes"),
        pytest.param("jürgen", '"j\\u00fcrgen"', id="non-ascii"),
        pytest.param("\x1b[31mred", '"\\u001b[31mred"', id="terminal-escape"),
        pytest.param("", '""', id="empty"),
    ],
)
def test_other_values_are_one_json_string(value: str, shown: str) -> None:
    escaped = escape(value)
    assert escaped == shown
    assert json.loads(escaped) == value and escaped.isprintable() and escaped.isascii()


def test_long_values_are_cut_and_say_how_long_they_were() -> None:
    assert escape("a" * MAX_SHOWN_CHARS) == "a" * MAX_SHOWN_CHARS
    assert escape("a" * (MAX_SHOWN_CHARS + 1)) == f'"{"a" * MAX_SHOWN_CHARS}"...({MAX_SHOWN_CHARS + 1} chars)'
    assert escape("x\n" * 10, limit=4) == '"x\\nx\\n"...(20 chars)'


@pytest.mark.parametrize("offered", ["abc-123", "A.b_c", "x" * 64])
def test_a_sane_request_id_is_kept(offered: str) -> None:
    assert new_request_id(offered) == offered == logs.request_id.get()


@pytest.mark.parametrize("offered", [None, "", "x" * 65, "id with space", "id\nforged", "ïd", "a/b"])
def test_any_other_request_id_is_replaced_by_a_fresh_one(offered: str | None) -> None:
    made = new_request_id(offered)
    assert made != offered and len(made) == 32 and int(made, 16) >= 0
    assert logs.request_id.get() == made
    assert new_request_id(offered) != made  # random, not derived from what was offered


@contextlib.contextmanager
def bare_root() -> Iterator[io.StringIO]:
    """The root logger as a fresh process has it (no handlers; pytest adds its own for each test), the
    output of the handler `configure` adds caught, and everything restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("httpx").level)
    saved_flags = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    root.handlers.clear()
    out = io.StringIO()
    try:
        yield out
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(saved[2])
        logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved_flags


def configured(out: io.StringIO, *, json_format: bool) -> None:
    logs.configure(json_format=json_format)
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)


def test_json_lines_carry_the_request_id() -> None:
    with bare_root() as out:
        configured(out, json_format=True)
        new_request_id("req-1")
        logging.getLogger("outpost.test").warning("started %s", escape("srv\nforged"))
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert (record["level"], record["logger"], record["request_id"]) == ("WARNING", "outpost.test", "req-1")
    assert record["message"] == 'started "srv\\nforged"' and "time" in record


def test_text_lines_carry_the_request_id() -> None:
    with bare_root() as out:
        configured(out, json_format=False)
        new_request_id("req-2")
        logging.getLogger("outpost.test").info("polled")
    assert out.getvalue().rstrip("\n").endswith("INFO outpost.test [req-2] polled")


def test_httpx_request_urls_are_not_logged() -> None:
    with bare_root() as out:
        configured(out, json_format=True)
        logging.getLogger("httpx").info('HTTP Request: POST https://hub/hub/api/users/alice/server/progress "200"')
        logging.getLogger("httpx").warning("kept")
    assert "alice" not in out.getvalue() and "kept" in out.getvalue()


def test_a_host_that_configured_logging_keeps_its_handlers() -> None:
    with bare_root() as out:
        own = logging.StreamHandler(out)
        logging.getLogger().addHandler(own)
        logs.configure(json_format=True)
        assert logging.getLogger().handlers == [own]
        assert logging.getLogger("httpx").level == logging.WARNING  # this holds either way

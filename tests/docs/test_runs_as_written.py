"""The docs run as written on a fresh clone: every `outpost` command line in docs/ and the README parses
with the real command's parser, and a shell block calls `.venv/bin/outpost` (the README's install makes
no activated virtualenv) unless the command runs inside a container (`kubectl exec ... -- outpost`);
every repository path a page names exists; no page leans on files outside the repository; every
`OUTPOST_*` name is a setting, every `sh tools/install.sh EXTRA` an extra and every `python -m` module
importable; and the log lines the docs show are the format `outpost.logs` writes."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import AliasChoices

from outpost import logs
from outpost.cli import _parser
from outpost.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
SHELL = {"sh", "bash", "shell", "console"}
VENV_OUTPOST = ".venv/bin/outpost"
# Top-level entries of the repository a page may name as a path (`lib/outpost/settings.py`, `uv.lock`).
TOP_LEVEL = {p.name for p in REPO.iterdir() if not p.name.startswith(".") or p.name == ".ci"} - {
    ".venv", "outpost_functions.egg-info",
}  # fmt: skip
# OUTPOST_* names the docs may use that are not fields of Settings, and the file that reads each.
NOT_SETTINGS = {
    "OUTPOST_CONFIG": "lib/outpost/settings.py",  # load_settings: the YAML file's path
    "OUTPOST_FUZZ_EXAMPLES": "tests/fuzz/harness.py",  # the fuzz tests' length
}


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def shell_blocks(text: str) -> Iterator[str]:
    for language, body in FENCE.findall(text):
        if language in SHELL:
            yield body


def prose(text: str) -> str:
    return FENCE.sub("", text)


def shell_commands(block: str) -> Iterator[list[str]]:
    """Each simple command of a shell block, as words: continuation lines joined, comments dropped,
    split at `&&`, `||`, `;` and `|`."""
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, ";"]:
            if word in {"&&", "||", ";", "|"}:
                if command:
                    yield command
                command = []
            else:
                command.append(word)


def outpost_call(words: list[str]) -> tuple[str, list[str]] | None:
    """('.venv/bin/outpost' | 'outpost' | 'container', arguments) when `words` runs the outpost command."""
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # VAR=value before the command
        words = words[1:]
    if not words:
        return None
    if words[0] in {"outpost", VENV_OUTPOST}:
        return words[0], words[1:]
    if words[0] == "kubectl" and "--" in words and words[words.index("--") + 1 :][:1] == ["outpost"]:
        return "container", words[words.index("--") + 2 :]
    return None


def documented_calls(text: str) -> Iterator[tuple[str, list[str]]]:
    """Every outpost command line of a page: in its shell blocks, and in inline code that starts with the
    command (`outpost services list`; not `outpost: ...`, which quotes a message)."""
    for block in shell_blocks(text):
        for words in shell_commands(block):
            call = outpost_call(words)
            if call:
                yield call
    for span in INLINE_CODE.findall(prose(text)):
        if re.match(rf"(outpost|{re.escape(VENV_OUTPOST)}) ", span):
            call = outpost_call(shlex.split(span))
            if call:
                yield "inline", call[1]


def parse_error(arguments: list[str]) -> str | None:
    """What the real `outpost` parser says about `arguments`, or None when it accepts them."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            _parser().parse_args(arguments)
        except SystemExit as exit:
            return None if exit.code == 0 else errors.getvalue().strip().splitlines()[-1]
    return None


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_outpost_command_parses(page: Path) -> None:
    wrong = [
        f"{' '.join(args)}: {error}" for _, args in documented_calls(page.read_text()) if (error := parse_error(args))
    ]
    assert not wrong


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_shell_blocks_run_the_outpost_of_the_virtualenv(page: Path) -> None:
    """The README's install makes `.venv` without activating it: a bare `outpost` is not on PATH."""
    text = page.read_text()
    if re.search(r"^\s*(source|\.) \.venv/bin/activate", text, re.MULTILINE):
        return
    bare = [" ".join(args) for how, args in documented_calls(text) if how == "outpost"]
    assert not bare, f"write {VENV_OUTPOST} (or activate the virtualenv on the page)"


def unknown_installs_and_modules(text: str) -> tuple[list[str], list[str]]:
    """The extras `sh tools/install.sh EXTRA` names that pyproject.toml lacks, and the `python -m`
    modules that cannot be found."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    unknown = [extra for extra in re.findall(r"sh tools/install\.sh ([\w-]+)", text) if extra not in extras]
    missing = [name for name in re.findall(r"python3? -m ([\w.]+)", text) if not findable(name)]
    return unknown, missing


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_the_project_is_installed_from_the_lock(page: Path) -> None:
    """`sh tools/install.sh ...` installs what uv.lock names; `pip install -e .` or `pip install '.[x]'` would
    resolve the ranges anew (other packages may install anything they like, e.g. into a hub's venv)."""
    assert not re.findall(r"pip install (?:-e |--editable )?['\"]?\.(?:\[[^\]]*\])?['\"]?(?:\s|`|$)", page.read_text())


def findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_install_names_an_extra_and_every_module_exists(page: Path) -> None:
    assert unknown_installs_and_modules(page.read_text()) == ([], [])


def named_paths(text: str) -> Iterator[str]:
    """Repository paths in a page's code: inline spans and the words of its shell blocks."""
    words = [*INLINE_CODE.findall(prose(text))]
    for block in shell_blocks(text):
        words += [w for command in shell_commands(block) for w in command]
    for word in words:
        for candidate in word.split():
            path = candidate.removeprefix("./").rstrip(".,:;)").split("#")[0].split("::")[0]
            if path.split("/")[0] in TOP_LEVEL and not re.search(r"[<>{}$]|\.\.\.", path):
                yield path


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_named_exists(page: Path) -> None:
    missing = sorted({path for path in named_paths(page.read_text()) if not any(REPO.glob(path))})
    assert not missing


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_page_leans_on_files_outside_the_repository(page: Path) -> None:
    """Users have the repository only: no seed documents, no ../shared folder."""
    text = page.read_text()
    assert not re.findall(r".{0,40}\bseed.{0,40}", text, re.IGNORECASE)
    assert not re.findall(r".{0,40}(?:\.\./shared|/shared/).{0,40}", text)


def setting_names() -> set[str]:
    """The environment names Settings reads: OUTPOST_<FIELD>, or a field's own aliases."""
    names = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice) for choice in alias.choices}
        else:
            names.add(f"OUTPOST_{field.upper()}")
    return names


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_outpost_variable_is_a_setting(page: Path) -> None:
    named = set(re.findall(r"\bOUTPOST_[A-Z0-9_]*[A-Z0-9]", page.read_text()))
    assert named - setting_names() - set(NOT_SETTINGS) == set()


def test_the_names_that_are_not_settings_are_read_where_they_say() -> None:
    for name, reader in NOT_SETTINGS.items():
        assert name in (REPO / reader).read_text(), f"{name} is no longer read by {reader}: drop it from the docs"


def documented_log_lines() -> tuple[str, str]:
    """The JSON and the text log line of docs/administration.md#logs, as the page shows them."""
    text = (REPO / "docs" / "administration.md").read_text()
    section = text[text.index("\n### Logs\n") :]
    json_line, text_line = (body.strip() for _, body in FENCE.findall(section)[:2])
    return json_line, text_line


def test_the_documented_log_lines_are_the_format_the_outpost_writes() -> None:
    json_line, text_line = documented_log_lines()
    record = logging.LogRecord("outpost.routes.http", logging.WARNING, __file__, 1, "a message", None, None)
    record.request_id = "1a890a859b8123574634b26d54722ef0"
    written = json.loads(logs.formatter(json_format=True).format(record))
    shown = json.loads(json_line)
    assert list(shown) == list(written)
    assert {k: shown[k] for k in ("level", "logger", "request_id")} == {
        k: written[k] for k in ("level", "logger", "request_id")
    }
    # The text form: each %(field)s of the real format string, in order, with the JSON line's values.
    text_format = logs.formatter(json_format=False)._fmt or ""
    fields = {"levelname": "level", "name": "logger", "request_id": "request_id", "message": "message"}
    expected = text_format.replace("%(asctime)s", shown["time"]) % {key: shown[at] for key, at in fields.items()}
    assert text_line == expected


def test_the_checks_find_what_they_look_for() -> None:
    page = (
        "```sh\nsh tools/install.sh dev && outpost dev --api-prt 1   # a typo\n"
        "kubectl -n outpost exec deploy/outpost-sshd -- outpost services show hub\n"
        "OUTPOST_X=1 .venv/bin/outpost --env-file .outpost/env check \\\n  --config values.yaml\n```\n"
        "Run `outpost services list --hub a` or `outpost services lst`; `outpost: no service` is a message.\n"
        "See `lib/outpost/settings.py`, `tools/nowhere.sh`, `knative/outpost-*.yaml` and `<data dir>/env`.\n"
    )
    assert unknown_installs_and_modules(
        page + "`sh tools/install.sh tset` `python -m bench.nowhere` `python -m nowhere.x`"
    ) == (
        ["tset"],
        ["bench.nowhere", "nowhere.x"],
    )
    calls = list(documented_calls(page))
    assert calls == [
        ("outpost", ["dev", "--api-prt", "1"]),
        ("container", ["services", "show", "hub"]),
        (VENV_OUTPOST, ["--env-file", ".outpost/env", "check", "--config", "values.yaml"]),
        ("inline", ["services", "list", "--hub", "a"]),
        ("inline", ["services", "lst"]),
    ]
    assert [bool(parse_error(args)) for _, args in calls] == [True, True, False, False, True]
    assert sorted(set(named_paths(page))) == [
        "knative/outpost-*.yaml",
        "lib/outpost/settings.py",
        "tools/install.sh",
        "tools/nowhere.sh",
    ]
    assert not any(REPO.glob("tools/nowhere.sh")) and all(any(REPO.glob(p)) for p in ["knative/outpost-*.yaml"])

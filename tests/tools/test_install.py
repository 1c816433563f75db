"""tools/install.sh: installs only from uv.lock, and stops at once, in one line, when the lock is stale."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent  # the .venv the tests run in (it has the pinned uv)


def checkout(tmp_path: Path) -> Path:
    """The files install.sh reads, beside this run's .venv (so nothing is downloaded)."""
    copy = tmp_path / "repo"
    (copy / "tools").mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock", "tools/install.sh"):
        shutil.copy(REPO / name, copy / name)
    (copy / ".venv").symlink_to(VENV)
    return copy


def run_install(copy: Path) -> subprocess.CompletedProcess[str]:
    # --uv first: proves the pinned uv is there, so the lock check below is what decides.
    subprocess.run(["sh", "tools/install.sh", "--uv"], cwd=copy, check=True, capture_output=True)
    return subprocess.run(["sh", "-c", "sh tools/install.sh test </dev/null"], cwd=copy, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "UV_OFFLINE": "1"})  # fmt: skip


def test_the_lock_matches_pyproject() -> None:
    uv = VENV / "bin" / "uv"
    result = subprocess.run([str(uv), "lock", "--check", "--offline"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_range_changed_without_a_new_lock_stops_the_install_in_one_line(tmp_path: Path) -> None:
    copy = checkout(tmp_path)
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"psutil>=5.9"', '"psutil>=5.9.1"'))
    result = run_install(copy)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "uv.lock is out of date with pyproject.toml: run 'sh tools/lock.sh' and commit uv.lock"
    )
    assert result.stdout == ""

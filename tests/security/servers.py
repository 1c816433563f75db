"""Local servers of a running stack seen as the kernel sees them: their identity files, processes, uids
(from /proc) and what a given uid may do to a path or a process."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.processes import wait_until
from tests.security.stack import Stack


def server_state(stack: Stack, name: str, hub: str = "hubA") -> dict[str, Any]:
    """The reconciler's identity file of a running server, read as the outpost reads it."""
    for marker in (stack.data_dir / "servers").glob("*/server.json"):
        state: dict[str, Any] = json.loads(marker.read_text())
        if state["service"] == {"hub": hub, "name": name, "start_id": "1"}:
            return state
    raise AssertionError(f"no server.json for {hub}/{name}")


def processes(state: dict[str, Any]) -> tuple[psutil.Process, psutil.Process]:
    """The `sh` wrapper the outpost started and the server command under it."""
    wrapper = psutil.Process(state["pid"])
    return wrapper, wait_until("the server under its wrapper", lambda: next(iter(wrapper.children()), None), 10)


def identity(process: psutil.Process) -> dict[str, list[str]]:
    """Real, effective, saved and filesystem uids and gids, and the supplementary groups, from /proc."""
    status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {key: fields[key].split() for key in ("Uid", "Gid", "Groups")}


def run_as(uid: int, gid: int, *command: str) -> subprocess.CompletedProcess[str]:
    """A command run as that uid and gid with no supplementary group: what a server of that user can do."""
    return subprocess.run(
        list(command), user=uid, group=gid, extra_groups=[], capture_output=True, text=True, cwd="/", timeout=30
    )


def can(uid: int, gid: int, test: str, path: Path) -> bool:
    """`test <flag> <path>` run as that user."""
    return run_as(uid, gid, "test", test, str(path)).returncode == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)

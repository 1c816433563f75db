"""One `outpost dev` per data directory: an exclusive flock on `<data dir>/outpost.pid`, which holds the PID.

The kernel drops the lock when the process dies, however it dies, so a stale file never blocks a start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from outpost.errors import ConfigurationError
from outpost.files import private_dir

LOCK_NAME = "outpost.pid"


def _describe(pid: int | None) -> str:
    return f"PID {pid}" if pid else "PID unknown"


def claim(data_dir: Path) -> IO[str]:
    """Create and lock `data_dir` for this process; keep the returned file open as long as the lock should last."""
    try:
        private_dir(data_dir)  # 0700 even when it exists
        handle = (data_dir / LOCK_NAME).open("a+")
    except OSError as exc:
        raise ConfigurationError(f"cannot use {data_dir} ({exc.strerror}); pass another --data-dir") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(handle)
        handle.close()
        raise ConfigurationError(
            f"{data_dir} is in use by another `outpost dev` ({_describe(pid)}); "
            "stop that one first, or pass another --data-dir"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def holder(data_dir: Path) -> int | None:
    """The PID of the running `outpost dev` that owns `data_dir`, or None when none does."""
    path = data_dir / LOCK_NAME
    if not path.exists():
        return None
    with path.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(handle) or -1
    return None


def _read_pid(handle: IO[str]) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        handle.seek(0)
        return int(handle.read().strip())
    return None

"""A throwaway PostgreSQL cluster: initdb and pg_ctl (Debian's `postgresql`, tools/install_postgresql.sh) run
as an unprivileged user in a temporary directory, on a free loopback port, with trust authentication."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

USER = "outpost"  # the cluster's superuser


def binaries() -> Path | None:
    """The directory of the newest installed initdb and pg_ctl (Debian keeps them off PATH), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _owner() -> dict[str, Any]:
    """Popen arguments for the cluster's OS user: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root, and there is neither a postgres nor a nobody user")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def cluster(bin_dir: Path) -> Iterator[str]:
    """A running cluster; yields its SQLAlchemy URL (database `postgres`). Stopped and removed after."""
    owner = _owner()
    root = Path(tempfile.mkdtemp(prefix="outpost-pg-"))
    if owner:
        os.chown(root, owner["user"], owner["group"])
    data, port = root / "data", _free_port()
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(root)}

    def run(*command: str) -> None:
        subprocess.run(command, env=env, cwd=root, check=True, capture_output=True, timeout=120, **owner)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)

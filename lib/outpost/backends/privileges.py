"""Who a local server runs as: the `run_as` user, the Popen arguments that drop to it, and whether
that user can run a command (asked of the system, by running `test` as that user)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outpost.errors import BackendError, ConfigurationError

ROOT_REFUSAL = (
    "The outpost runs as root and c.LocalProcessBackend.run_as is not set, so it starts no servers: set "
    "c.LocalProcessBackend.run_as to an unprivileged user (or to 'root' to run servers as root, with "
    "--allow-root in c.LocalProcessBackend.args for Jupyter servers)."
)
# Checks each flag/path pair; prints the first path that fails.
_PROBE = 'while [ $# -gt 0 ]; do test "$1" "$2" || { echo "$2"; exit 1; }; shift 2; done'


@dataclass(frozen=True)
class ServerUser:
    name: str
    uid: int
    gid: int

    @property
    def is_outpost(self) -> bool:
        """Whether servers run as the outpost's own user (no privilege change)."""
        return self.uid == os.geteuid()

    def popen_args(self) -> dict[str, Any]:
        """subprocess.Popen arguments that start a process as this user, with no supplementary group
        of the outpost's; none when it is the outpost's own user."""
        if self.is_outpost:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def owns(self, path: Path) -> None:
        """Hand a directory or file the outpost just created to this user."""
        if not self.is_outpost:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)


def lookup_user(run_as: str) -> ServerUser:
    """A user by name or uid, as the system's user database knows it."""
    try:
        entry = pwd.getpwuid(int(run_as)) if run_as.isdigit() else pwd.getpwnam(run_as)
    except KeyError:
        raise ConfigurationError(f"c.LocalProcessBackend.run_as: no user {run_as!r} on this machine") from None
    return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def server_user(run_as: str) -> ServerUser:
    """Who servers run as: `run_as`, or the outpost's own user when it is unset. Root never by
    default: an outpost running as root with `run_as` unset refuses to start servers."""
    if run_as:
        try:
            return lookup_user(run_as)
        except ConfigurationError as exc:
            raise BackendError(exc.message) from None
    uid = os.geteuid()
    if uid == 0:
        raise BackendError(ROOT_REFUSAL)
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a container's arbitrary uid, unknown to /etc/passwd
        name = str(uid)
    return ServerUser(name, uid, os.getegid())


def _interpreters(script: Path, search_path: str) -> list[str]:
    """The `#!` interpreter of a script (and what `/usr/bin/env` would run), or nothing."""
    try:
        with script.open("rb") as text:
            line = text.readline(256)
    except OSError:
        return []
    if not line.startswith(b"#!"):
        return []
    words = line[2:].decode(errors="replace").split()
    if not words:
        return []
    found = [words[0]]
    if Path(words[0]).name == "env":
        program = next((w for w in words[1:] if not w.startswith("-")), None)
        resolved = shutil.which(program, path=search_path) if program else None
        found.append(resolved or program or "")
    return found


def unusable_path(user: ServerUser, cmd: Sequence[str], search_path: str) -> str:
    """The first file of `cmd` that `user` cannot use, "" when it can run it: the command and its
    script interpreter must be executable, the script and any file named by an argument readable."""
    if not cmd:
        return "(no command)"
    program = shutil.which(cmd[0], path=search_path)
    if program is None:
        return cmd[0]
    checks = ["-x", program, "-r", program]
    for interpreter in _interpreters(Path(program), search_path):
        checks += ["-x", interpreter]
    for arg in cmd[1:]:
        if os.path.isabs(arg) and os.path.isfile(arg):
            checks += ["-r", arg]
    probe = subprocess.run(
        ["/bin/sh", "-c", _PROBE, "sh", *checks],
        env={"PATH": "/usr/bin:/bin"}, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=30, **user.popen_args(),
    )  # fmt: skip
    return probe.stdout.strip() or ("(probe failed)" if probe.returncode else "")

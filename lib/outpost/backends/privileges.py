"""Who a local server runs as: the `run_as` user, or a uid of its hub's own from `uid_range`; the Popen
arguments that drop to it, and whether that user can run a command (asked of the system, by running `test`
as that user)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from outpost.errors import BackendError, ConfigurationError

ROOT_REFUSAL = (
    "The outpost runs as root and neither c.LocalProcessBackend.uid_range nor c.LocalProcessBackend.run_as is "
    "set, so it starts no servers: set c.LocalProcessBackend.uid_range (e.g. '60578-61183': each hub's servers "
    "run as a uid of its own) or c.LocalProcessBackend.run_as to an unprivileged user (or to 'root' to run "
    "servers as root, with --allow-root in c.LocalProcessBackend.args for Jupyter servers)."
)
# Unused by systemd (docs/UIDS-GIDS.md: between its mapped users and its DynamicUser range) and by the
# distributions' regular users: `outpost dev` as root gives hubs their uids from here.
DEV_UID_RANGE = "60578-61183"
UID_RANGE_MAX = 65536  # uids in one range: allocating looks through it in one Redis script
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


class HubUids(Protocol):
    """Where a hub's uid is kept, the same for every outpost process (`outpost.store.Store.hub_uid`)."""

    async def hub_uid(self, hub: str, first: int, last: int, skip: Sequence[int]) -> int | None: ...


def parse_uid_range(text: str) -> range:
    """`c.LocalProcessBackend.uid_range`, "FIRST-LAST" (both included); an empty range when unset."""
    if not text.strip():
        return range(0)
    first, dash, last = text.partition("-")
    try:
        bounds = range(int(first), int(last) + 1) if dash else range(0)
    except ValueError:
        bounds = range(0)
    if not bounds or bounds.start < 1000 or bounds.stop > 2**31 or len(bounds) > UID_RANGE_MAX:
        raise BackendError(
            f"c.LocalProcessBackend.uid_range {text!r}: write FIRST-LAST, at most {UID_RANGE_MAX} uids, "
            "none below 1000 (the system's)"
        )
    return bounds


def system_ids(bounds: range) -> list[int]:
    """The ids in `bounds` that a user or group of the system already has: never a hub's."""
    taken = {entry.pw_uid for entry in pwd.getpwall()} | {entry.gr_gid for entry in grp.getgrall()}
    return sorted(taken & set(bounds))


class ServerUsers:
    """Who each hub's servers run as: one user for all (`run_as`, or the outpost's own), or, for an outpost
    running as root with `uid_range`, a uid and gid of the hub's own (as systemd's DynamicUser: no entry in
    /etc/passwd), kept in the store so every outpost process agrees."""

    def __init__(self, run_as: str, uid_range: str, uids: HubUids | None) -> None:
        self._range = range(0) if run_as or os.geteuid() != 0 else parse_uid_range(uid_range)
        self._uids = uids
        self._shared = None if self._range else server_user(run_as)
        self._known: dict[str, ServerUser] = {}  # a hub's uid never changes: asked of the store once per process

    @property
    def per_hub(self) -> bool:
        return self._shared is None

    @property
    def is_outpost(self) -> bool:
        return self._shared is not None and self._shared.is_outpost

    async def of_hub(self, hub: str) -> ServerUser:
        if self._shared is not None:
            return self._shared
        known = self._known.get(hub)
        if known is not None:
            return known
        if self._uids is None:
            raise BackendError("c.LocalProcessBackend.uid_range needs the store to keep each hub's uid")
        bounds = self._range
        uid = await self._uids.hub_uid(hub, bounds.start, bounds.stop - 1, system_ids(bounds))
        if uid is None:
            raise BackendError(
                f"every uid of c.LocalProcessBackend.uid_range ({bounds.start}-{bounds.stop - 1}) belongs to a "
                "hub already: widen the range"
            )
        self._known[hub] = ServerUser(f"uid {uid}", uid, uid)
        return self._known[hub]


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

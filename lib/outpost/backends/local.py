"""Local processes: the embedded default of `outpost dev`.

The server runs under `sh`, which records its exit code in a file, so any process (not only the
one that started it) can poll it; pid plus process creation time guard against pid reuse.

When the outpost runs as root, servers run as a uid of their hub's own from `uid_range`, or as `run_as`
(`privileges`). What the outpost relies on
(server.json, the output log, the exit code) stays in its own 0700 directory, out of the server's
reach; what the server needs (its home, certificate files) lives under `home_root`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from traitlets import Dict, Float, Int, List, Unicode
from traitlets.config import Config, Configurable

from outpost.backends import common, output, sockets
from outpost.backends.base import Progress, SaveState, Started, StartSpec, options_for_start
from outpost.backends.privileges import HubUids, ServerUser, ServerUsers
from outpost.errors import AddressTaken, BackendError, InvalidBody
from outpost.files import private_dir
from outpost.logs import escape
from outpost.models import ServiceId

log = logging.getLogger(__name__)
KILL_WAIT = 5.0  # seconds for the kernel to end a group after SIGKILL
KEPT_FAILED_STARTS = 20  # directories of failed starts (their output and exit code) kept in servers/failed
FREE_PORT_ATTEMPTS = 3
# Runs the command, then writes its exit status where poll can read it. The wrapper's stdin is the
# exit-code file, opened for writing by the outpost in its own directory; the command gets /dev/null
# instead, so the server can neither reach the file by path nor inherit a way to write it.
_RECORD_EXIT = '"$@" </dev/null; code=$?; echo $code >&0; exit $code'
# Where homes live when servers run as another user: the data directory is 0700, so not there.
HOME_ROOTS = Path("/var/lib/outpost/homes")
# Variables a notebook server needs from the outpost's own environment; the rest comes from the hub.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")


class LocalProcessBackend(Configurable):
    """Options of the local-process backend; `misc` may override any of them per start."""

    cmd = List(Unicode(), default_value=["jupyterhub-singleuser"], help="Command that starts the server").tag(
        config=True
    )
    args = List(Unicode(), help="Extra arguments appended to cmd").tag(config=True)
    ip = Unicode("127.0.0.1", help="Address the server binds to, unless a hub's misc.ip names one of allowed_ips").tag(
        config=True
    )
    allowed_ips = List(
        Unicode(), default_value=["127.0.0.1"], help="Addresses a hub's misc.ip may choose; any other is ignored"
    ).tag(config=True)
    port = Int(
        0,
        min=0,
        max=65535,
        help="Port the server listens on; 0 picks a free one. A start fails if another process listens there",
    ).tag(config=True)
    notebook_dir = Unicode("", help="Working directory; default: one per hub and user in the data directory").tag(
        config=True
    )
    env = Dict(value_trait=Unicode(), help="Extra environment variables for the server").tag(config=True)
    start_timeout = Float(120.0, help="Seconds to wait for the server to accept connections").tag(config=True)
    stop_timeout = Float(5.0, help="Seconds between SIGTERM and SIGKILL").tag(config=True)
    run_as = Unicode(
        "",
        help="One user (name or uid) every server runs as, when the outpost runs as root ('root' is allowed, and "
        "then Jupyter servers need --allow-root in args); it comes before uid_range. Empty: uid_range, or the "
        "outpost's own user when it is not root.",
    ).tag(config=True)
    uid_range = Unicode(
        "",
        help="FIRST-LAST: when the outpost runs as root (and run_as is unset), each hub's servers run as a uid and "
        "gid of the hub's own from this range, kept in Redis (as systemd's DynamicUser). outpost dev sets "
        "60578-61183.",
    ).tag(config=True)
    home_root = Unicode(
        "",
        help="Directory of the servers' homes (one per hub and user) and certificate files. Default: "
        "<data_dir>/servers/home, or /var/lib/outpost/homes/<key of the data directory> when servers run as "
        "another user.",
    ).tag(config=True)


# Chosen by the administrator alone: a hub choosing them would choose who its server runs as, or where
# it may listen.
_ADMIN_ONLY = frozenset({"run_as", "uid_range", "home_root", "allowed_ips"})


_OPTION_NAMES = frozenset(LocalProcessBackend.class_trait_names(config=True))


def _segment(value: str) -> str:
    """A directory name for a hub or user name: never empty, '.', '..' or a path, never shared."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", value)[:48]
    return f"{readable}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def default_home_root(data_dir: Path) -> Path:
    """The home root when servers run as another user: outside the data directory (0700, so out of
    their reach), one per data directory, so two outposts never share homes."""
    return HOME_ROOTS / hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


def _passable_dir(path: Path) -> Path:
    """A directory a server may pass through but not list (0711), with any parents it lacked."""
    for directory in reversed([p for p in (path, *path.parents) if not p.exists()]):
        directory.mkdir(mode=0o711, exist_ok=True)
        directory.chmod(0o711)  # the umask may have narrowed it
    return path


def _hub_dir(path: Path, users: ServerUsers, user: ServerUser) -> Path:
    """A hub's directory of homes: its own user's alone when each hub has one, else passable by all (0711)."""
    return _user_dir(path, user) if users.per_hub else _passable_dir(path)


def _user_dir(path: Path, user: ServerUser) -> Path:
    """A directory of the server's user, 0700; made so again if it already exists."""
    path.mkdir(mode=0o700, exist_ok=True)
    user.owns(path)
    path.chmod(0o700)
    return path


def _check_environment(env: dict[str, str]) -> None:
    """InvalidBody for what execve cannot carry: a NUL anywhere, '=' in a name or an empty one, text the
    file system encoding cannot write (a lone surrogate). subprocess would refuse it only at the spawn."""
    for name, value in env.items():
        try:
            encoded = os.fsencode(name) + b"=" + os.fsencode(value)
        except (UnicodeError, TypeError):
            encoded = b"\0"
        if not name or "=" in name or b"\0" in encoded:
            raise InvalidBody(
                f"env: the variable {escape(name)} cannot be passed to a process (a NUL, '=' in its name, or text"
                " the system cannot encode)"
            )


def _free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def resolved_command(cmd: list[str], search_path: str) -> list[str]:
    """`cmd` with its program found where the servers' `sh` would not look: a bare name that is not on
    their PATH runs from next to the outpost's own interpreter, where `pip install` put it (a venv's bin
    that no activated venv puts on PATH, e.g. `.venv/bin/outpost dev`)."""
    if not cmd or os.sep in cmd[0] or shutil.which(cmd[0], path=search_path):
        return cmd
    beside = Path(sys.executable).parent / cmd[0]  # not resolved: a venv's python is a symlink out of it
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside), *cmd[1:]]
    return cmd


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_HAS_PROC = os.path.exists("/proc/self/stat")


@functools.cache
def _boot_time() -> float:
    """btime of /proc/stat, as psutil.boot_time() reads it on Linux; the poll path (and a poll
    function's cold start) does without importing psutil."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _proc_stat(pid: int | str) -> list[bytes]:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...) in one read:
    psutil reads it twice, and /proc/stat, per process, on the poll's hot path (docs/performance.md)."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    try:
        return os.read(fd, 1024).rpartition(b")")[2].split()
    finally:
        os.close(fd)


def _started_at(fields: list[bytes]) -> float:
    """A process's creation time, computed as psutil's create_time() computes it, so states stored
    by either match."""
    return int(fields[19]) / _CLOCK_TICKS + _boot_time()


def _create_time(pid: int) -> float:
    if _HAS_PROC:
        return _started_at(_proc_stat(pid))
    import psutil  # here, not at the top: on Linux, only the fallbacks need it

    return float(psutil.Process(pid).create_time())


def _running_from_proc(pid: int, create_time: float) -> bool:
    try:
        fields = _proc_stat(pid)
        created = _started_at(fields)
    except (OSError, IndexError, ValueError):
        return False
    return fields[0] != b"Z" and abs(created - create_time) <= 0.01


def _running_from_psutil(pid: int, create_time: float) -> bool:
    """The same question where there is no /proc (a laptop running macOS)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        # bool(): psutil is untyped here (pyproject.toml), so the comparison is Any to mypy.
        return bool(abs(proc.create_time() - create_time) <= 0.01 and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _running(state: dict[str, Any]) -> bool:
    """Whether the process we started is still there (the same pid, started at the same time, so
    not a reused pid) and not a zombie."""
    try:
        pid, create_time = int(state["pid"]), float(state["create_time"])
    except (KeyError, ValueError, TypeError):
        return False
    return (_running_from_proc if _HAS_PROC else _running_from_psutil)(pid, create_time)


def _group_from_proc(pgid: int) -> Iterator[int]:
    """The pids of the group's members other than zombies, found as they come."""
    wanted = str(pgid).encode()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = _proc_stat(entry.name)
            except OSError:  # gone meanwhile
                continue
            if fields[2:3] == [wanted] and fields[0] != b"Z":
                yield int(entry.name)


def _group_from_psutil(pgid: int) -> Iterator[int]:
    import psutil

    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                yield proc.pid
        except (ProcessLookupError, PermissionError):
            continue


def _live_in_group_from_proc(pgid: int) -> bool:
    return any(_group_from_proc(pgid))


def _live_in_group_from_psutil(pgid: int) -> bool:
    return any(_group_from_psutil(pgid))


def _reap_on_exit(proc: subprocess.Popen[bytes]) -> None:
    """Collect the exit status when the process ends, without a thread per server. The server is
    started with subprocess.Popen, which uses vfork, rather than asyncio's create_subprocess_exec,
    which on uvloop forks the whole worker with the event loop blocked (docs/performance.md), so
    the reaping asyncio would do is ours."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (macOS, kernels before 5.3): a thread waits
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
        return
    loop = asyncio.get_running_loop()

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        proc.wait()

    loop.add_reader(pidfd, reap)


class LocalBackend:
    keeps_identity = True  # identity.sealed, next to server.json

    def __init__(self, config: Config, data_dir: Path, uids: HubUids | None = None) -> None:
        self._config = config
        self._data_dir = data_dir
        self._servers = data_dir / "servers"
        self._uids = uids

    @functools.cached_property
    def _defaults(self) -> LocalProcessBackend:
        return LocalProcessBackend(config=self._config)

    @functools.cached_property
    def _users(self) -> ServerUsers:
        return ServerUsers(self._defaults.run_as, self._defaults.uid_range, self._uids)

    @functools.cached_property
    def _home_root(self) -> Path:
        configured = self._defaults.home_root
        if configured:
            return _passable_dir(Path(configured))
        if self._users.is_outpost:
            return _passable_dir(self._private_servers() / "home")
        return _passable_dir(default_home_root(self._data_dir))

    def _private_servers(self) -> Path:
        """`<data_dir>/servers`, and the data directory above it, the outpost's alone (0700)."""
        private_dir(self._data_dir)
        return private_dir(self._servers)

    def _server_dir(self, sid: ServiceId) -> Path:
        """The server's directory: server.json, its output and its exit code, out of its reach."""
        workdir = self._private_servers() / common.service_dir_name(sid)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(mode=0o700)
        return workdir

    def _home(self, spec: StartSpec, user: ServerUser) -> Path:
        """One home per hub and user, the user's alone: no hub plants configuration another loads."""
        hub_homes = _hub_dir(self._home_root / _segment(spec.sid.hub), self._users, user)
        return _user_dir(hub_homes / _segment(spec.env.get("JUPYTERHUB_USER", "user")), user)

    def _options(self, misc: dict[str, Any]) -> LocalProcessBackend:
        return options_for_start(self._defaults, misc, _ADMIN_ONLY)

    def _bind_ip(self, options: LocalProcessBackend, misc: dict[str, Any]) -> None:
        """The address a server binds to is the administrator's: a hub's misc.ip counts only if allowed_ips
        lists it (the OutpostSpawner sends 0.0.0.0 by default, so anything else is ignored, not refused)."""
        requested = misc.get("ip")
        chosen = requested if requested in self._defaults.allowed_ips else self._defaults.ip
        if options.ip != chosen:  # then misc named ip, and `options` is this start's own copy
            options.ip = chosen

    async def start(self, spec: StartSpec, save_state: SaveState, progress: Progress) -> Started:
        for _ in range(FREE_PORT_ATTEMPTS - 1):
            try:
                return await self._start_once(spec, save_state, progress)
            except AddressTaken:
                # A port we picked was free when we looked; someone took it before the server bound it (two
                # starts can be handed the same one). A port the hub or administrator chose is not ours to change.
                if self._options(spec.misc).port:
                    raise
        return await self._start_once(spec, save_state, progress)

    async def _start_once(self, spec: StartSpec, save_state: SaveState, progress: Progress) -> Started:
        options = self._options(spec.misc)
        self._bind_ip(options, spec.misc)
        _check_environment({**spec.env, **options.env})  # before anything exists: a refused start leaves nothing
        user = await self._users.of_hub(spec.sid.hub)  # first: as root without a user, this refuses
        home = self._home(spec, user)
        workdir = self._server_dir(spec.sid)
        files = self._home_root / ".servers" / workdir.name  # for the server's user: certificate files
        try:
            cwd = Path(options.notebook_dir) if options.notebook_dir else home
            cwd.mkdir(parents=True, exist_ok=True)
            port = options.port or _free_port(options.ip)
            scheme, env = self._environment(spec, options, files, home, port, user)
            cmd = resolved_command([*options.cmd, *options.args], env.get("PATH", os.defpath))
            proc = self._spawn(cmd, workdir, env, cwd, user)
        except BaseException:  # no server: nothing of it stays
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(files, ignore_errors=True)
            raise
        create_time = _create_time(proc.pid)  # not reaped yet: even an exited one is there
        _reap_on_exit(proc)
        state = {
            "pid": proc.pid, "create_time": create_time, "dir": str(workdir), "files": str(files),
            "host": common.connect_host(options.ip), "port": port, "stop_timeout": options.stop_timeout,
        }  # fmt: skip
        # Lets the reconciler find this server even if the record never learns of it.
        (workdir / "server.json").write_text(json.dumps({**state, "service": asdict(spec.sid)}))
        try:
            await save_state(state)
            await progress(50, f"Server process started on the outpost (port {port}), waiting for it to answer")
            await self._wait_ready(state, options.start_timeout)
        except BackendError as exc:  # it exited or never answered: the message ends with what it printed
            tail = output.file_tail(workdir / "output.log", [*spec.env.values(), *options.env.values()])
            await self._discard(spec.sid, state)
            raise BackendError(output.with_tail(exc.message, tail), exc.detail) from None
        except BaseException:  # nothing will stop this server once the caller forgets it
            await self.stop(state)
            raise
        return Started(address=f"{scheme}://{state['host']}:{port}", state=state)

    async def _discard(self, sid: ServiceId, state: dict[str, Any]) -> None:
        """Stop a server whose start failed, but keep its output and exit code for whoever asks why. Its record
        is forgotten at once (and each start has its own id), so the newest KEPT_FAILED_STARTS are kept."""
        await self.stop(state, keep_output=True)
        if (Path(state["dir"]) / "server.json").exists():
            return  # its processes outlived the stop: the reconciler finds it there
        failed = private_dir(self._servers / "failed")
        kept = failed / Path(state["dir"]).name
        shutil.rmtree(kept, ignore_errors=True)
        os.replace(state["dir"], kept)
        for old in sorted(failed.iterdir(), key=_modified)[:-KEPT_FAILED_STARTS]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("the output of the failed start of %s is kept in %s", sid, kept / "output.log")

    def _spawn(
        self, cmd: list[str], workdir: Path, env: dict[str, str], cwd: Path, user: ServerUser
    ) -> subprocess.Popen[bytes]:
        """The server's process group, as the server's user. Its output and exit status go to files the
        outpost opens in `workdir`, which that user cannot reach."""
        with (workdir / "output.log").open("wb") as output, (workdir / "exit_code").open("wb") as exit_code:
            try:
                return subprocess.Popen(
                    ["/bin/sh", "-c", _RECORD_EXIT, "sh", *cmd],
                    stdin=exit_code, stdout=output, stderr=subprocess.STDOUT,
                    env=env, cwd=cwd, start_new_session=True, **user.popen_args(),
                )  # fmt: skip
            except OSError as exc:
                raise BackendError(f"cannot start {cmd[0]!r}: {exc.strerror}") from None
            except ValueError as exc:  # an environment the OS refuses, which _check_environment missed
                raise InvalidBody(f"the server's environment is invalid: {exc}") from None

    def _install_certs(self, certs: dict[str, str], files: Path, user: ServerUser) -> dict[str, str]:
        """The server's certificate files, readable by its user only; their variables for its env."""
        _passable_dir(files.parent)
        shutil.rmtree(files, ignore_errors=True)
        files.mkdir(mode=0o700)
        paths = common.write_private_files(files, {name: certs.get(name, "") for name in common.SSL_ENV})
        for path in paths.values():
            user.owns(Path(path))
        user.owns(files)
        return common.ssl_env(paths)

    def _environment(
        self, spec: StartSpec, options: LocalProcessBackend, files: Path, home: Path, port: int, user: ServerUser
    ) -> tuple[str, dict[str, str]]:
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update(spec.env)
        env["HOME"] = str(home)
        env.update(options.env)
        env.update(common.resource_env(spec.resources))
        tls = common.uses_tls(spec.certs)
        if tls:
            env.update(self._install_certs(spec.certs, files, user))
        scheme = common.scheme(tls)
        env["JUPYTERHUB_SERVICE_URL"] = common.service_url(scheme, options.ip, port, spec.env)
        return scheme, env

    async def _wait_ready(self, state: dict[str, Any], timeout: float) -> None:
        """Ready once the server's own process group listens at its address: connecting is not enough, since
        whatever else listens there (another hub's server, the outpost's API) would answer too."""
        pgid = int(state["pid"])  # the `sh` wrapper leads the group; the server is its child
        await sockets.wait_until_served(
            state["host"], int(state["port"]), lambda: _server_processes(pgid), lambda: self.poll(state), timeout
        )

    async def poll(self, state: dict[str, Any]) -> int | None:
        if _running(state):
            return None
        try:
            return int((Path(state["dir"]) / "exit_code").read_text().strip())
        except (OSError, ValueError, KeyError):  # no status recorded: the wrapper was killed, maybe not the server
            return None if _group_lives(state) else 1

    async def stop(self, state: dict[str, Any], *, keep_output: bool = False) -> None:
        """Stop every process of the server's group. Its files go only once they are gone: server.json, the
        identity file, tells the reconciler that something may still run. `keep_output`: the rest stays."""
        if (_running(state) or _group_lives(state)) and not await self._terminate(state):
            log.warning(
                "processes of a server (process group %s) outlived SIGKILL; %s stays for the reconciler",
                state["pid"], Path(state["dir"]) / "server.json",
            )  # fmt: skip
            return
        if state.get("files"):
            shutil.rmtree(state["files"], ignore_errors=True)
        if state.get("dir"):
            if not keep_output:
                shutil.rmtree(state["dir"], ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (Path(state["dir"]) / "server.json").unlink()

    async def _terminate(self, state: dict[str, Any]) -> bool:
        """SIGTERM to the server's group, SIGKILL after its stop_timeout; whether no live process is left."""
        pgid = int(state["pid"])
        for sig, wait in ((signal.SIGTERM, float(state.get("stop_timeout", 5.0))), (signal.SIGKILL, KILL_WAIT)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            pause = 0.001  # most servers are gone within milliseconds: look again soon, then every 20 ms
            seen_members = False
            while time.monotonic() < deadline:
                if not _running(state):
                    if not _group_exists(pgid):
                        return True
                    # Members left: zombies not collected yet (ours are, by the event loop, once we
                    # yield), or live processes. Only at the next look, a scan of every process.
                    if seen_members and not _live_in_group(pgid):
                        return True
                    seen_members = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.02)
        return not (_running(state) or _group_lives(state))

    async def running(self) -> list[tuple[ServiceId, dict[str, Any]]]:
        """The servers of this data directory with a live process, found by their identity files."""
        found = []
        for marker in self._servers.glob("*/server.json"):
            try:
                state = json.loads(marker.read_text())
                sid = ServiceId(**state.pop("service"))
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if _running(state) or _group_lives(state):
                found.append((sid, state))
        return found

    async def remember(self, state: dict[str, Any], sealed: str) -> None:
        await asyncio.to_thread(common.replace_private, _identity_file(state), sealed)

    async def recall(self, state: dict[str, Any]) -> str | None:
        try:
            return await asyncio.to_thread(_identity_file(state).read_text)
        except OSError:
            return None

    async def logs(self, state: dict[str, Any]) -> list[str]:
        try:
            text = (Path(state["dir"]) / "output.log").read_text(errors="replace")
        except (OSError, KeyError):
            return []
        return common.log_tail(text)


def _identity_file(state: dict[str, Any]) -> Path:
    """Next to server.json: the sealed identity a lost record is rebuilt from."""
    return Path(state["dir"]) / "identity.sealed"


def _leader_created(pgid: int) -> float | None:
    """The start time of the process whose pid is `pgid` (a group's leader has the group's id), or None."""
    if _HAS_PROC:
        try:
            return _started_at(_proc_stat(pgid))
        except (OSError, IndexError, ValueError):
            return None
    import psutil

    try:
        return float(psutil.Process(pgid).create_time())
    except psutil.NoSuchProcess:
        return None


def _group_lives(state: dict[str, Any]) -> bool:
    """Whether a live process is left in the server's process group, whose leader is the `sh` wrapper we
    started (pid and start time in `state`). The kernel gives a group's id to no new process while any member
    lives: a process with that pid and another start time means the group has ended. With the wrapper gone
    (killed from outside), its members are the server's; looking for them is a look at every process."""
    try:
        pgid, create_time = int(state["pid"]), float(state["create_time"])
    except (KeyError, ValueError, TypeError):
        return False
    if not _group_exists(pgid):
        return False
    leader = _leader_created(pgid)
    if leader is not None and abs(leader - create_time) > 0.01:
        return False
    return _live_in_group(pgid)


def _modified(path: Path) -> float:
    """When a directory changed last; 0 when it is gone (another failed start removed it meanwhile)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _group_exists(pgid: int) -> bool:
    """Whether the server's process group still has any member, zombies included."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: it exists
        pass
    return True


def _live_in_group(pgid: int) -> bool:
    """Whether a process other than a zombie is in the group: a look at every process."""
    return (_live_in_group_from_proc if _HAS_PROC else _live_in_group_from_psutil)(pgid)


def _children(pid: int) -> list[int]:
    """A process's children, as the kernel lists them (none when it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def _server_processes(pgid: int) -> Iterator[int]:
    """The processes of a server's group, cheapest first: the wrapper and its descendants (the server is
    its child), then, if those do not hold what is asked about, every other member (a look at every
    process). Whoever iterates stops when it has found what it needs."""
    if _HAS_PROC and os.path.exists(f"/proc/{pgid}/task/{pgid}/children"):
        tree, seen = [pgid], set()
        while tree:
            pid = tree.pop()
            if pid not in seen:
                seen.add(pid)
                yield pid
                tree += _children(pid)
    yield from _group_members(pgid)


def _group_members(pgid: int) -> list[int]:
    """Every process of the group other than zombies: a look at every process."""
    return list((_group_from_proc if _HAS_PROC else _group_from_psutil)(pgid))

"""Processes for the end-to-end tests: started in their own session with output to a log file,
waited for with deadlines, and stopped with a signal followed by a check that nothing they started
is still running (no orphans)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

VENV_BIN = Path(sys.executable).parent
MARKER = "OUTPOST_E2E_RUN"  # environment variable each process of a test run inherits

T = TypeVar("T")
SPAWNED: list[Proc] = []  # for the failure report: whose log tails to show


def progress(message: str) -> None:
    """A progress line; shown live with `pytest -s`, else with the test's captured output."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, condition: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Return the first truthy value of `condition()`; fail naming `what` after `timeout` seconds."""
    progress(f"waiting for {what} (up to {timeout:.0f}s)")
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def base_env(marker: str) -> dict[str, str]:
    """The test process's environment without outpost settings, with the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_") and k != "REDIS_URL"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env[MARKER] = marker
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    marker: str
    owned_paths: tuple[Path, ...] = ()

    @classmethod
    def spawn(
        cls, name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path, owned: Iterable[Path] = ()
    ) -> Proc:
        progress(f"starting {name}: {' '.join(cmd)}")
        with log.open("ab") as out:
            popen = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = cls(name, popen, log, env[MARKER], tuple(owned))
        SPAWNED.append(proc)
        return proc

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGINT, *, group: bool = False, timeout: float = 30.0) -> int:
        """Signal the process (or its whole process group, as Ctrl-C does) and wait for it to exit.

        Raises if it does not exit in time, or if anything it started (a descendant, or a process
        carrying this run's marker or working under its paths) outlives it; leftovers are killed.
        """
        known = self.descendants()
        if self.popen.poll() is None:
            progress(f"stopping {self.name} with {signal.Signals(sig).name}{' (process group)' if group else ''}")
            if group:
                os.killpg(self.pid, sig)
            else:
                self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_all([psutil.Process(self.pid), *known])
            self.popen.wait(timeout=10)
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f}s:\n{self.tail()}") from None
        assert_no_orphans(self.name, known, self.marker, self.owned_paths)
        return code


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def marked_processes(marker: str, paths: Iterable[Path]) -> list[psutil.Process]:
    """Live processes of this run: the marker in their environment, or a path of ours in their
    command line or working directory (servers the outpost starts get a clean environment)."""
    needles = [str(p) for p in paths]
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
            if any(n in cmdline or cwd.startswith(n) for n in needles) or proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_no_orphans(name: str, known: Iterable[psutil.Process], marker: str, paths: Iterable[Path]) -> None:
    """Wait briefly for stragglers to finish exiting; then kill and report whatever is left."""
    paths = tuple(paths)

    def leftovers() -> list[psutil.Process]:
        return [p for p in {*known, *marked_processes(marker, paths)} if _alive(p)]

    deadline = time.monotonic() + 5.0
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = leftovers()
    if left:
        described = [f"{p.pid} {' '.join(p.cmdline())[:160]}" for p in left if _alive(p)]
        kill_all(left)
        raise AssertionError(f"processes left behind by {name}:\n" + "\n".join(described))


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group, from a scan of every process (psutil, not the backend's code)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def kill_all(procs: Iterable[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass

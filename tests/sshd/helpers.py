"""Helpers for the SSH daemon's tests: the real OpenSSH client, target servers, waiting, services."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from outpost.flavors import FlavorLimits
from outpost.models import ServiceId
from outpost.store import Store
from sshd.server import Listener

ROOT = Path(__file__).resolve().parents[2]
SSH = shutil.which("ssh") or "/usr/bin/ssh"
CRYPT_KEY = Fernet.generate_key().decode()
USER = "jhuboutpost"


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait for `predicate()` with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_service(
    store: Store, hub: str, name: str, address: str, *, env: dict[str, str] | None = None
) -> ServiceId:
    """Store a service of `hub` and mark it running at `address` ("host:port"), as a start does."""
    sid = ServiceId(hub, name, "1")
    created = await store.create(
        sid,
        user="alice",
        user_id="1",
        flavor=None,
        body={"name": name, "env": env or {}},
        certs=None,
        limits=FlavorLimits(),
    )
    assert created.ok
    await store.mark_running(sid, address, f"http://{address}")
    return sid


@dataclass(frozen=True)
class ClientKey:
    path: Path
    public: str


@dataclass(frozen=True)
class Target:
    """A real server on a loopback port: the destination of a forward."""

    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class OpenSSH:
    """The real `ssh` with forwardbasespawner's options: one ControlMaster, then `-O` commands."""

    def __init__(self, port: int, key: Path, workdir: Path, user: str = USER) -> None:
        self.port, self.key, self.workdir, self.user = port, key, workdir, user
        self.control_path = workdir / "ctl"
        self.known_hosts = workdir / "known_hosts"
        self.master_log = workdir / "master.log"
        self.destination = f"{user}@127.0.0.1"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}

    def options(self, *extra: str, multiplex: bool = True) -> list[str]:
        """forwardbasespawner's options; `multiplex=False` makes a connection of its own."""
        control = f"-oControlPath={self.control_path}" if multiplex else "-oControlPath=none"
        return [
            "-F", "/dev/null", "-p", str(self.port),
            f"-oControlMaster={'auto' if multiplex else 'no'}", "-oControlPersist=yes", control,
            "-oStrictHostKeyChecking=accept-new", f"-oUserKnownHostsFile={self.known_hosts}",
            "-oGlobalKnownHostsFile=/dev/null", f"-oIdentityFile={self.key}", "-oIdentitiesOnly=yes",
            "-oBatchMode=yes", "-oServerAliveInterval=15", "-oConnectTimeout=10", *extra,
        ]  # fmt: skip

    async def run(self, *args: str, timeout: float = 20) -> Result:
        proc = await asyncio.create_subprocess_exec(
            SSH, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    async def start_master(self, *extra: str) -> Result:
        """`ssh -f -N -n ... user@host`: the master forks away once authenticated.

        The master logs to a file (`-E`): once detached it points its stderr at /dev/null.
        """
        proc = await asyncio.create_subprocess_exec(
            SSH, *self.options(*extra), "-E", str(self.master_log), "-f", "-N", "-n", self.destination,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env,
        )  # fmt: skip
        returncode = await asyncio.wait_for(proc.wait(), 20)
        return Result(returncode, "", self.log())

    async def mux(self, command: str, *extra: str) -> Result:
        """`ssh ... -O <command> [extra] user@host`, through the master's control socket."""
        return await self.run(*self.options(), "-O", command, *extra, self.destination)

    async def master_pid(self) -> int:
        result = await self.mux("check")  # "Master running (pid=1234)"
        assert result.returncode == 0, result.stderr
        return int(result.stderr.split("pid=")[1].split(")")[0])

    def log(self) -> str:
        return self.master_log.read_text(errors="replace") if self.master_log.exists() else ""


OpenSSHFactory = Callable[..., OpenSSH]
Daemon = Callable[..., Awaitable[Listener]]


async def forward(client: OpenSSH, target: Target) -> int:
    """`-O forward -L127.0.0.1:<local>:<target>`; returns the local port."""
    local = free_port()
    result = await client.mux("forward", f"-L127.0.0.1:{local}:127.0.0.1:{target.port}")
    assert result.returncode == 0, result.stderr
    return local


async def started(openssh: OpenSSHFactory, daemon: Listener, key: str = "hub_a") -> OpenSSH:
    client = openssh(daemon.port, key)
    result = await client.start_master()
    assert result.returncode == 0, result.stderr
    assert (await client.mux("check")).returncode == 0
    return client


async def exchange(port: int, payload: bytes) -> bytes:
    """Send `payload`, half-close, and read everything the other side sends back.

    A refused channel makes the client close the local connection: EOF, a reset or "not
    connected" when that close wins the race with our writes; in every case no data.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10)
    except OSError:  # ConnectionResetError, BrokenPipeError, ENOTCONN
        return b""
    finally:
        writer.close()


def forward_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"forward {event}")]


class DaemonProcess:
    """`python -m sshd --config values.yaml`, its stderr collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.text)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon: no {pattern!r} within {timeout}s; log:\n{self.text}")
            if self.proc.returncode is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}; log:\n{self.text}")
            await asyncio.sleep(0.02)
        return found

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self.reader


async def start_daemon_process(
    config: Path, values: dict[str, Any], *args: str, max_descriptors: int | None = None
) -> DaemonProcess:
    """Write `values` to `config` and run the daemon on it, with none of this process's OUTPOST_*
    settings; `args` default to `--metrics-port 0`; `max_descriptors`: its RLIMIT_NOFILE."""
    config.write_text(yaml.safe_dump(values))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_") and k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "lib"), str(ROOT)])

    def limit() -> None:
        if max_descriptors is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_descriptors, max_descriptors))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sshd", "--config", str(config), *(args or ("--metrics-port", "0")),
        cwd=config.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=limit,
    )  # fmt: skip
    return DaemonProcess(proc)

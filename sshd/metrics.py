"""Prometheus metrics of the SSH daemon, served by `python -m sshd` on its metrics port (/metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

__all__ = [
    "AUTH_REFUSED",
    "CONNECTIONS",
    "FORWARD_BYTES",
    "FORWARD_BYTES_DOWN",
    "FORWARD_BYTES_UP",
    "FORWARDS",
    "FORWARDS_OPEN",
    "FORWARDS_REFUSED",
    "STARTUPS_REFUSED",
    "TUNNEL_RECREATIONS",
    "serve_metrics",
]

CONNECTIONS = Gauge("outpost_sshd_connections", "Open SSH connections (authenticated or not)")
AUTH_REFUSED = Counter(
    "outpost_sshd_auth_refused_total", "Public keys refused, by reason", ["reason"]
)  # reason: unknown-key (or wrong user name), from-mismatch, key-expired, key-connection-limit, too-many-failures
STARTUPS_REFUSED = Counter(
    "outpost_sshd_startups_refused_total", "Connections closed before authentication by a cap, by reason", ["reason"]
)  # reason: see sshd.limits.StartupRefusal
FORWARDS = Counter("outpost_sshd_forwards_total", "Forwards opened to a running service")
FORWARDS_REFUSED = Counter(
    "outpost_sshd_forwards_refused_total", "Forwards refused, by reason", ["reason"]
)  # reason: see sshd.server.ForwardRefusal
FORWARDS_OPEN = Gauge("outpost_sshd_forwards_open", "Forwards open now")
FORWARD_BYTES = Counter(
    "outpost_sshd_forward_bytes_total", "Bytes carried by closed forwards", ["direction"]
)  # direction: up (hub -> service), down (service -> hub)
# Children looked up once: `.labels()` costs a lock and a dict lookup, and these move per forward.
FORWARD_BYTES_UP = FORWARD_BYTES.labels("up")
FORWARD_BYTES_DOWN = FORWARD_BYTES.labels("down")
TUNNEL_RECREATIONS = Counter(
    "outpost_sshd_tunnel_recreations_total", "Setup-tunnel calls after a start, by outcome", ["outcome"]
)  # outcome: posted, failed, skipped, elsewhere, untunnelled


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics from a background thread (prometheus_client's own server)."""
    start_http_server(port, host)

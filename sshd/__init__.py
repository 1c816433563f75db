"""The Outpost's forward-only SSH daemon: hubs reach their own running services, nothing else.

`serve(settings, index)` listens in the caller's event loop; `recreate_tunnels(...)` asks the hubs
to rebuild their forwards after a start; `python -m sshd` runs both with uvloop.
"""

from __future__ import annotations

import outpost  # noqa: F401  # first: its warning filters are in place before asyncssh is imported
from sshd.addresses import AddressIndex
from sshd.server import ForwardOnlyServer, Listener, serve
from sshd.tunnels import RecreateResult, TunnelPoster, TunnelSource, recreate_configured, recreate_tunnels

__all__ = [
    "AddressIndex",
    "ForwardOnlyServer",
    "Listener",
    "RecreateResult",
    "TunnelPoster",
    "TunnelSource",
    "recreate_configured",
    "recreate_tunnels",
    "serve",
]

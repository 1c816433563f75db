"""What the daemon reads from the store's records: the tunnels of running services, from their hubs'
environment variables (`JUPYTERHUB_SETUPTUNNEL_URL`, `JUPYTERHUB_API_TOKEN`) and start answers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from outpost.errors import UndecryptableRecord
from outpost.models import Phase, ServiceId, ServiceMeta
from outpost.store import Secrets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunnelTarget:
    id: ServiceId
    answer: str
    setup_tunnel_url: str
    api_token: str
    tunnelled: bool = False  # the hub had a tunnel to it (`ServiceMeta.tunnelled`)


class Records(Protocol):
    """`outpost.store.Store`: every record, and a record's decrypted fields."""

    def all_hubs_services(self) -> AsyncIterator[ServiceMeta]: ...

    async def secrets(self, sid: ServiceId) -> Secrets: ...


async def running_tunnels(records: Records) -> AsyncIterator[TunnelTarget]:
    """Every running service whose hub gave a setup-tunnel URL, a token and got a start answer."""
    async for meta in records.all_hubs_services():
        if meta.phase != Phase.RUNNING:
            continue
        try:
            body, _, answer = await records.secrets(meta.id)
        except UndecryptableRecord:
            log.warning("cannot recreate the tunnel of %s: its record cannot be decrypted", meta.id)
            continue
        env = body.get("env", {})
        url, token = env.get("JUPYTERHUB_SETUPTUNNEL_URL", ""), env.get("JUPYTERHUB_API_TOKEN", "")
        if answer and url and token:
            yield TunnelTarget(meta.id, answer, url, token, meta.tunnelled)

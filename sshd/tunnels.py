"""Tunnel recreation: after a daemon start, ask each hub to rebuild its forwards to running services.

Every tunnel a hub had through the previous daemon died with it. For each running service whose
hub wants it and that had a tunnel, the stored start answer is POSTed again to the service's setup-tunnel
URL, which makes the hub run `ssh -O forward` anew. A service had a tunnel when a daemon opened a forward
to it or the hub took its address from the async start's setup-tunnel call (`ServiceMeta.tunnelled`):
a hub that reaches its servers without SSH answers that call with 400 and stops the server.

Several daemons behind one Service share the work: each service's tunnel is claimed in Redis
(`Store.claim_tunnel_recreation`), so daemons starting together post it once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from outpost.models import ServiceId
from sshd import metrics
from sshd.lookup import Records, TunnelTarget, running_tunnels

if TYPE_CHECKING:
    from outpost.runtime import Runtime

__all__ = ["RecreateResult", "TunnelPoster", "TunnelSource", "recreate_configured", "recreate_tunnels"]

logger = logging.getLogger(__name__)

CONCURRENCY = 8


class TunnelSource(Records, Protocol):
    """`outpost.store.Store`: the records running services are read from (`sshd.lookup`), and the
    claims that let one daemon of several recreate each tunnel."""

    async def claim_tunnel_recreation(self, sid: ServiceId, claimer: str) -> bool: ...


class TunnelPoster(Protocol):
    """`outpost.hub.HubClient`: POST `{"service": answer}` with the API token, if the hub's callback
    policy admits the URL; bounded retries inside."""

    async def setup_tunnel(self, url: str, token: str, answer: str, sid: ServiceId) -> bool: ...


@dataclass(frozen=True, slots=True)
class RecreateResult:
    posted: int = 0
    failed: int = 0
    skipped: int = 0  # the hub does not want its tunnels recreated
    elsewhere: int = 0  # claimed by another daemon that started with this one
    untunnelled: int = 0  # the hub never tunnelled to it (reaches it directly)


async def recreate_tunnels(
    source: TunnelSource,
    hub: TunnelPoster,
    wanted: Callable[[str], bool | Awaitable[bool]],
    *,
    claimer: str = "",
    concurrency: int = CONCURRENCY,
) -> RecreateResult:
    """POST every running service's answer to its hub, for the services a hub tunnelled to and the hubs where
    `wanted(hub)` is true.

    A hub's refusal (a 4xx) is logged and changes nothing here: the server keeps running. One failing hub
    never stops the others; failures are logged with the service's identifiers only (never the URL or the
    token). Each hub gets its first call alone, then the others at once (`concurrency` in all). A service
    another daemon claimed moments ago is left to it; `claimer` names this daemon (default: the host name,
    a pod's name in Kubernetes).
    """
    gate = asyncio.Semaphore(concurrency)
    counts = {"posted": 0, "failed": 0, "skipped": 0, "elsewhere": 0, "untunnelled": 0}
    claimer = claimer or socket.gethostname()

    async def post(target: TunnelTarget) -> None:
        async with gate:
            about = str(target.id)
            try:
                if not await source.claim_tunnel_recreation(target.id, claimer):
                    counts["elsewhere"] += 1
                    return
                ok = await hub.setup_tunnel(target.setup_tunnel_url, target.api_token, target.answer, target.id)
                error = "" if ok else "hub refused or unreachable"
            except Exception as exc:  # one hub's trouble must not stop the others
                ok, error = False, type(exc).__name__
            counts["posted" if ok else "failed"] += 1
            if ok:
                logger.info("tunnel recreation requested service=%s", about)
            else:
                logger.warning("tunnel recreation failed service=%s: %s", about, error)

    async def hub_tunnels(targets: list[TunnelTarget]) -> None:
        # The hub's first call opens its SSH master. Calls at the same moment would each find no master and
        # open one (forwardbasespawner checks, then connects): the losers fail or linger as extra connections.
        await post(targets[0])
        async with asyncio.TaskGroup() as group:
            for target in targets[1:]:
                group.create_task(post(target))

    by_hub: dict[str, list[TunnelTarget]] = {}
    async for target in running_tunnels(source):
        if not target.tunnelled:
            counts["untunnelled"] += 1
            continue
        decision = wanted(target.id.hub) if target.setup_tunnel_url else False
        if not (await decision if inspect.isawaitable(decision) else decision):
            counts["skipped"] += 1
            continue
        by_hub.setdefault(target.id.hub, []).append(target)
    async with asyncio.TaskGroup() as group:
        for targets in by_hub.values():
            group.create_task(hub_tunnels(targets))
    result = RecreateResult(**counts)
    for outcome, count in counts.items():
        metrics.TUNNEL_RECREATIONS.labels(outcome).inc(count)
    logger.info(
        "tunnel recreation done posted=%d failed=%d skipped=%d elsewhere=%d untunnelled=%d",
        result.posted,
        result.failed,
        result.skipped,
        result.elsewhere,
        result.untunnelled,
    )
    return result


async def recreate_configured(runtime: Runtime, claimer: str = "") -> RecreateResult:
    """At a daemon's start: for the hubs the configuration wants (our hubOptions and upstream's
    ssh_recreate_at_start traits, see `outpost.upstream_config.tunnel_recreation`)."""
    from outpost.upstream_config import tunnel_recreation

    async def stored_hubs() -> set[str]:
        return {meta.id.hub async for meta in runtime.store.all_hubs_services()}

    wanted = await tunnel_recreation(runtime.upstream, runtime.settings, stored_hubs)
    return await recreate_tunnels(runtime.store, runtime.hub, wanted, claimer=claimer)

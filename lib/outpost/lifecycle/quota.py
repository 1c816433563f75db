"""Flavors meet the store: admission with live counts, the hub's menu, and flavor updates to the hub."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from outpost import errors, upstream_config
from outpost.flavors import (
    Admission,
    Refusal,
    Usage,
    admission,
    allowed_flavors,
    flavor_menu,
    refusal_message,
)
from outpost.models import ServiceId, StartRequest
from outpost.runtime import Runtime

log = logging.getLogger(__name__)

_ERRORS: dict[Refusal, type[errors.SpawnRefused]] = {
    Refusal.NO_FLAVOR: errors.FlavorNotAllowed,
    Refusal.FLAVOR_NOT_ALLOWED: errors.FlavorNotAllowed,
    Refusal.FLAVOR_FULL: errors.FlavorFull,
    Refusal.USER_FLAVOR_LIMIT: errors.UserOverLimit,
    Refusal.USER_TOTAL_LIMIT: errors.UserOverLimit,
}


async def admit(runtime: Runtime, hub: str, request: StartRequest) -> Admission:
    """Decide with the counts of now; the store repeats the quota checks atomically when it counts."""
    flavor = request.flavor or ""
    decision = admission(
        runtime.flavor_policy,
        hub,
        await upstream_config.user_authentication(runtime.upstream, request.authentication),
        request.flavor,
        Usage(*await runtime.store.usage(hub, request.user, flavor)),
    )
    if decision.refusal is not None:
        raise _ERRORS[decision.refusal](decision.message)
    return decision


def refused_by_store(decision: Admission, flavor: str, verdict: str, count: int) -> errors.OutpostError:
    """The error for a refusal of the store's atomic check (another start took the last slot)."""
    if verdict == "exists":
        return errors.ServiceExists()
    refusal = Refusal(verdict)
    label = decision.flavor.display_name if decision.flavor and decision.flavor.display_name else flavor
    return _ERRORS[refusal](refusal_message(refusal, label, decision.limits, count))


async def menu(runtime: Runtime, hub: str, authentication: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `/flavors` answer for a hub (or one of its users), with live counts."""
    auth = await upstream_config.user_authentication(runtime.upstream, authentication)
    allowed = allowed_flavors(runtime.flavor_policy, hub, auth)
    return flavor_menu(allowed, await runtime.store.flavor_counts(list(allowed)))


async def send_flavor_update(runtime: Runtime, sid: ServiceId, env: Mapping[str, str]) -> None:
    """After a start, failed start or stop, keep the hub's flavor menu current."""
    url = env.get("JUPYTERHUB_FLAVORS_UPDATE_URL")
    configured = runtime.settings.hub(sid.hub).flavors_update_token
    token = env.get("JUPYTERHUB_FLAVORS_UPDATE_TOKEN") or (configured.get_secret_value() if configured else None)
    if not url or not runtime.flavor_policy.configured:
        return
    token = token or await upstream_config.flavors_update_token(runtime.upstream, sid.hub)
    if not token:
        return
    await runtime.hub.flavors_update(url, token, await menu(runtime, sid.hub), sid)

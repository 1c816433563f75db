"""Flavors meet the store: admission, the hub's menu with live counts, and flavor updates to the hub.

A start is admitted in two steps that never decide the same thing: `admit` checks whether the user may start
the flavor at all (policy) and finds its limits; the store's create script counts and decides, atomically,
whether a limit is reached; `refused` turns its one answer into what the hub is told.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from outpost import errors, upstream_config
from outpost.flavors import Admission, Refusal, admission, allowed_flavors, counted_refusal, flavor_menu
from outpost.models import ServiceId, StartRequest
from outpost.runtime import Runtime
from outpost.store import Created

log = logging.getLogger(__name__)

_ERRORS: dict[Refusal, type[errors.SpawnRefused]] = {
    Refusal.NO_FLAVOR: errors.FlavorNotAllowed,
    Refusal.FLAVOR_NOT_ALLOWED: errors.FlavorNotAllowed,
    Refusal.FLAVOR_FULL: errors.FlavorFull,
    Refusal.USER_FLAVOR_LIMIT: errors.UserOverLimit,
    Refusal.USER_TOTAL_LIMIT: errors.UserOverLimit,
}


async def admit(runtime: Runtime, hub: str, request: StartRequest) -> Admission:
    """The flavor this user may start and its limits (`Admission.limits`, for `Store.create` to count
    against); raises when the user may not start it at all."""
    decision = admission(
        runtime.flavor_policy,
        hub,
        await upstream_config.user_authentication(runtime.upstream, request.authentication),
        request.flavor,
    )
    if decision.refusal is not None:
        raise _ERRORS[decision.refusal](decision.message)
    return decision


def refused(decision: Admission, flavor: str, created: Created) -> errors.OutpostError:
    """What the hub is told when the store's create script refused a start: the service exists, or a limit
    is reached (with the count the script found)."""
    if created.refusal == "exists":
        return errors.ServiceExists()
    verdict = Refusal(created.refusal)
    return _ERRORS[verdict](counted_refusal(decision, flavor, verdict, created.count).message)


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

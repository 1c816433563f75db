"""What the hub's user is told about the callback URLs of a start that the outpost does not call."""

from __future__ import annotations

import logging

from outpost.models import ServiceId
from outpost.runtime import Runtime

log = logging.getLogger(__name__)


def callback_notes(runtime: Runtime, sid: ServiceId, env: dict[str, str], *, announce: bool = False) -> list[str]:
    """One line per callback URL this start's hub may not have called; with `announce`, each is logged
    too, naming the variable and the hub (never the URL or a token)."""
    refused = runtime.callbacks.refusals(sid.hub, env)
    if announce:
        for variable, reason in refused:
            log.warning("%s of hub %s is not called for %s: %s", variable, sid.hub, sid, reason)
    return [f"outpost: {variable} is not called: {reason}" for variable, reason in refused]

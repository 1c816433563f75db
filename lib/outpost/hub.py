"""Calls back to the hub: progress events, the setup-tunnel request and flavor usage updates.

A failing hub never fails our own work: every call is bounded in time and retries, and errors are
logged with the service id only (URLs and tokens stay out of the log). A URL the hub's
`callbackUrls` does not admit, or whose address the outpost never calls, is not called at all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from outpost.callbacks import CallbackPolicy
from outpost.guarded_http import refused_address
from outpost.models import ServiceId

log = logging.getLogger(__name__)


class HubClient:
    def __init__(self, client: httpx.AsyncClient, retries: int, policy: CallbackPolicy | None = None) -> None:
        self._client = client
        self._retries = retries
        self._policy = policy or CallbackPolicy({})

    async def _post(self, variable: str, sid: ServiceId, url: str, token: str, body: Any, tries: int) -> bool:
        refusal = self._policy.refusal(sid.hub, url)
        if refusal:  # announced once by the start (`CallbackPolicy.notes`); each skipped call at debug
            log.debug("%s of hub %s is not called for %s: %s", variable, sid.hub, sid, refusal)
            return False
        for attempt in range(1, tries + 1):
            try:
                response = await self._client.post(url, json=body, headers={"Authorization": f"token {token}"})
                if response.status_code < 300:
                    return True
                log.warning("%s for %s answered %d (try %d/%d)", variable, sid, response.status_code, attempt, tries)
                if response.status_code < 500 and response.status_code != 429:
                    return False
            except httpx.HTTPError as exc:
                refused = refused_address(exc)
                if refused:  # no retry changes the address
                    log.warning("%s of hub %s is not called for %s: %s", variable, sid.hub, sid, refused)
                    return False
                log.warning("%s for %s failed: %s (try %d/%d)", variable, sid, type(exc).__name__, attempt, tries)
            except (httpx.InvalidURL, ValueError) as exc:  # a URL or token httpx cannot send: no retry helps
                log.warning("%s for %s cannot be sent: %s", variable, sid, type(exc).__name__)
                return False
            if attempt < tries:
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        return False

    async def progress(
        self, env: dict[str, str], sid: ServiceId, progress: int, message: str, *, failed: bool = False
    ) -> bool:
        """Send one progress event; a failed one makes the hub cancel the spawn."""
        url, token = env.get("JUPYTERHUB_EVENTS_URL"), env.get("JUPYTERHUB_API_TOKEN")
        if not url or not token:
            return False
        event: dict[str, Any] = {"progress": progress, "message": message, "html_message": message}
        if failed:
            event["failed"] = True
        # Progress is cosmetic except for `failed`, which is worth retrying.
        return await self._post("JUPYTERHUB_EVENTS_URL", sid, url, token, event, self._retries if failed else 1)

    async def setup_tunnel(self, url: str, token: str, answer: str, sid: ServiceId) -> bool:
        """Tell the hub where the server is, so it builds (or rebuilds) its SSH forward."""
        return await self._post("JUPYTERHUB_SETUPTUNNEL_URL", sid, url, token, {"service": answer}, self._retries)

    async def flavors_update(self, url: str, token: str, usage: dict[str, Any], sid: ServiceId) -> bool:
        return await self._post("JUPYTERHUB_FLAVORS_UPDATE_URL", sid, url, token, usage, self._retries)

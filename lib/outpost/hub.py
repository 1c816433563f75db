"""Calls back to the hub: progress events, the setup-tunnel request and flavor usage updates.

A failing hub never fails our own work: every call is bounded in time and retries, and errors are
logged with the service id only (URLs and tokens stay out of the log).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

log = logging.getLogger(__name__)


class HubClient:
    def __init__(self, client: httpx.AsyncClient, retries: int) -> None:
        self._client = client
        self._retries = retries

    async def _post(self, what: str, about: str, url: str, token: str, body: Any, tries: int) -> bool:
        for attempt in range(1, tries + 1):
            try:
                response = await self._client.post(url, json=body, headers={"Authorization": f"token {token}"})
                if response.status_code < 300:
                    return True
                log.warning("hub %s for %s answered %d (try %d/%d)", what, about, response.status_code, attempt, tries)
                if response.status_code < 500 and response.status_code != 429:
                    return False
            except httpx.HTTPError as exc:
                log.warning("hub %s for %s failed: %s (try %d/%d)", what, about, type(exc).__name__, attempt, tries)
            except (httpx.InvalidURL, ValueError) as exc:  # a URL or token httpx cannot send: no retry helps
                log.warning("hub %s for %s cannot be sent: %s", what, about, type(exc).__name__)
                return False
            if attempt < tries:
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        return False

    async def progress(
        self, env: dict[str, str], about: str, progress: int, message: str, *, failed: bool = False
    ) -> bool:
        """Send one progress event; a failed one makes the hub cancel the spawn."""
        url, token = env.get("JUPYTERHUB_EVENTS_URL"), env.get("JUPYTERHUB_API_TOKEN")
        if not url or not token:
            return False
        event: dict[str, Any] = {"progress": progress, "message": message, "html_message": message}
        if failed:
            event["failed"] = True
        # Progress is cosmetic except for `failed`, which is worth retrying.
        return await self._post("event", about, url, token, event, self._retries if failed else 1)

    async def setup_tunnel(self, url: str, token: str, answer: str, about: str) -> bool:
        """Tell the hub where the server is, so it builds (or rebuilds) its SSH forward."""
        return await self._post("setup-tunnel", about, url, token, {"service": answer}, self._retries)

    async def flavors_update(self, url: str, token: str, usage: dict[str, Any], about: str) -> bool:
        return await self._post("flavors-update", about, url, token, usage, self._retries)

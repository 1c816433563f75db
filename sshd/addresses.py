"""The destination check from memory: who runs a server at host:port, cached per address and dropped when
the store says that address changed.

Every write that publishes or withdraws an address, or moves its owner's phase, publishes the address on
a Redis channel (`outpost.store.keys.ADDRESS_CHANGES`); the daemon subscribes and forgets that address.
An entry also expires after `ssh_address_cache_seconds` (the bound on staleness when a message is lost).
While the subscription is down, every channel open asks Redis directly and nothing is cached; when it is
up again, everything cached before is dropped. Only owners in an active phase are cached: a refusal is
always decided by Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

from outpost.models import ACTIVE_PHASES
from outpost.store import AddressOwner

__all__ = ["AddressCache", "AddressIndex"]

logger = logging.getLogger(__name__)

MAX_ENTRIES = 65536  # addresses of running servers; past this (never in practice) the cache starts over
RESUBSCRIBE_SECONDS = (0.1, 5.0)  # backoff between subscription attempts: first, largest


class AddressIndex(Protocol):
    """`outpost.store.Store`: the owner of an address, and the changes of the address index."""

    def address_owner(self, host: str, port: int) -> Awaitable[AddressOwner | None]: ...

    def address_changes(self) -> AsyncIterator[str | None]: ...


class AddressCache:
    """`address_owner(host, port)` as the store answers it, from memory while the subscription is up.

    `start()` subscribes in the background; `aclose()` stops. `ttl` 0: no cache, every lookup asks Redis.
    """

    def __init__(self, index: AddressIndex, ttl: float) -> None:
        self._index = index
        self._ttl = ttl
        self._entries: dict[str, tuple[float, AddressOwner]] = {}
        # Bumped by every change: a lookup that was in flight across one does not cache what it read.
        self._generation = 0
        self.live = False  # subscribed: entries may be kept
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._ttl > 0 and self._task is None:
            self._task = asyncio.create_task(self._follow())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop()
        self.live = False

    async def address_owner(self, host: str, port: int) -> AddressOwner | None:
        address = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        entry = self._entries.get(address)
        if entry is not None and self.live and entry[0] > loop.time():
            return entry[1]
        generation = self._generation
        owner = await self._index.address_owner(host, port)
        if owner is not None and owner.phase in ACTIVE_PHASES and self.live and generation == self._generation:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[address] = (loop.time() + self._ttl, owner)
        return owner

    def _drop(self, address: str | None = None) -> None:
        self._generation += 1
        if address is None:
            self._entries.clear()
        else:
            self._entries.pop(address, None)

    async def _follow(self) -> None:
        """Keep the subscription: apply each change; when it breaks, ask Redis directly until it is back."""
        delay = RESUBSCRIBE_SECONDS[0]
        while True:
            try:
                async for change in self._index.address_changes():
                    self._drop(change)
                    if change is None:  # (re)subscribed
                        self.live = True
                        delay = RESUBSCRIBE_SECONDS[0]
                        logger.info("address cache on: changes followed, entries kept up to %gs", self._ttl)
            except Exception as exc:  # any failure of the subscription: Redis gone, a failover, a refusal
                # Once per outage, not once per attempt.
                log = logger.warning if self.live or delay == RESUBSCRIBE_SECONDS[0] else logger.debug
                log(
                    "address cache off: subscription failed (%s); each forward asks Redis until it is back",
                    type(exc).__name__,
                )
            self.live = False
            self._drop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_SECONDS[1])

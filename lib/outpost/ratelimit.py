"""Failed logins are limited per source and per hub name, counted in Redis so every function instance agrees.

This module decides; `outpost.store.LoginCounters` counts.

A source with too many failures is refused (429) before its password is even checked. A hub name
under attack is only closed to sources that have not recently logged in as that hub, so the real
hub keeps working while someone elsewhere guesses its password.

Sources and hub names come from the request, so neither reaches a key as it is: a source is
hashed, and hub names are hashed into HUB_BUCKETS buckets, however many names are tried and however
long (`outpost.auth` caps the Authorization header before decoding it). Known and unknown names are
bucketed alike: were unknown names treated apart, whether a name's bucket closes would tell an
attacker that the name exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Protocol

from outpost.errors import TooManyAttempts

CACHE_SECONDS = 1.0  # how long an instance trusts its last look at Redis, to keep polls at one read
GOOD_REFRESH_SECONDS = 60.0
HUB_BUCKETS = 1024  # a few hubs rarely share one; sharing only closes one's new sources with the other's


@dataclass(frozen=True)
class LoginLimits:
    per_source: int
    per_hub: int
    window_seconds: int


class FailureCounts(Protocol):
    """`outpost.store.LoginCounters`: the shared counts, by source id and hub bucket."""

    async def standing(self, source: str, bucket: str) -> tuple[bool, int]: ...

    async def known_source(self, bucket: str, source: str) -> bool: ...

    async def count_failure(self, source: str, bucket: str, window_seconds: int) -> int: ...

    async def block(self, source: str, seconds: int) -> None: ...

    async def note_known_source(self, bucket: str, source: str) -> None: ...


def _digest(value: str) -> str:
    # All of it: the header caps bound the work, and a cut would let long names that differ late collide.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def source_id(source: str) -> str:
    """A source as keys and sets hold it: fixed size, whatever the request said."""
    return _digest(source)


def hub_bucket(hub: str) -> str:
    """The bucket a hub name's failures count in."""
    return str(int(_digest(hub)[:8], 16) % HUB_BUCKETS)


class LoginGuard:
    """Takes sources and hub names as the request gave them; only their ids reach Redis and memory."""

    def __init__(self, counts: FailureCounts, limits: LoginLimits) -> None:
        self._counts = counts
        self._limits = limits
        self._ids: dict[tuple[str, str], tuple[str, str]] = {}  # (source, hub) -> their ids, hashed once
        self._checked: dict[tuple[str, str], float] = {}
        self._looking: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._good_noted: dict[tuple[str, str], float] = {}

    def _key(self, source: str, hub: str) -> tuple[str, str]:
        """(source id, hub bucket); a hub's polls come from a few sources, so each pair is hashed once."""
        key = self._ids.get((source, hub))
        if key is None:
            if len(self._ids) > 10_000:
                self._ids.clear()
            key = self._ids[(source, hub)] = (source_id(source), hub_bucket(hub))
        return key

    async def check(self, source: str, hub: str) -> None:
        """Raise TooManyAttempts when this source, or this hub name for this source, is closed. Requests
        that find no fresh look share the one in flight: a burst of polls is one read, not one each."""
        key = self._key(source, hub)
        if self._checked.get(key, 0.0) > time.monotonic():
            return
        looking = self._looking.get(key)
        if looking is None:
            looking = self._looking[key] = asyncio.ensure_future(self._look(*key))
            looking.add_done_callback(lambda done: self._looked(key, done))
        await asyncio.shield(looking)  # one caller going away does not cancel the others' look

    def _looked(self, key: tuple[str, str], done: asyncio.Future[None]) -> None:
        self._looking.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: its waiters may all have gone

    async def _look(self, caller: str, bucket: str) -> None:
        blocked, hub_failures = await self._counts.standing(caller, bucket)
        if blocked:
            raise TooManyAttempts(retry_after=self._limits.window_seconds)
        if hub_failures >= self._limits.per_hub:
            if not await self._counts.known_source(bucket, caller):
                raise TooManyAttempts(retry_after=self._limits.window_seconds)
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[(caller, bucket)] = time.monotonic() + CACHE_SECONDS

    async def failed(self, source: str, hub: str) -> None:
        caller, bucket = key = self._key(source, hub)
        window = self._limits.window_seconds
        self._checked.pop(key, None)
        if await self._counts.count_failure(caller, bucket, window) >= self._limits.per_source:
            await self._counts.block(caller, window)

    async def succeeded(self, source: str, hub: str) -> None:
        """Remember this source as the hub's own (at most once a minute per instance)."""
        caller, bucket = key = self._key(source, hub)
        now = time.monotonic()
        if self._good_noted.get(key, 0.0) > now:
            return
        if len(self._good_noted) > 10_000:
            self._good_noted.clear()
        self._good_noted[key] = now + GOOD_REFRESH_SECONDS  # first: a burst notes it once
        try:
            await self._counts.note_known_source(bucket, caller)
        except BaseException:
            self._good_noted.pop(key, None)  # not noted: the next success tries again
            raise

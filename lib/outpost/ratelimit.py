"""Failed logins are limited per source and per hub name, in Redis so every function instance agrees.

A source with too many failures is refused (429) before its password is even checked. A hub name
under attack is only closed to sources that have not recently logged in as that hub, so the real
hub keeps working while someone elsewhere guesses its password.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import quote

import redis.asyncio as aioredis

from outpost.errors import TooManyAttempts

CACHE_SECONDS = 1.0  # how long an instance trusts its last look at Redis, to keep polls at one read
GOOD_REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class Limits:
    per_source: int
    per_hub: int
    window_seconds: int


# Counts failures in a window that starts with the first one. KEYS: counters. ARGV: window seconds
_COUNT_IN_WINDOW = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then redis.call('EXPIRE', key, ARGV[1]) end
end
return counts
"""


def _key(kind: str, value: str) -> str:
    return f"outpost:auth:{kind}:{quote(value, safe='')}"


class LoginGuard:
    def __init__(self, client: aioredis.Redis, limits: Limits) -> None:
        self._redis = client
        self._count = client.register_script(_COUNT_IN_WINDOW)
        self._limits = limits
        self._checked: dict[tuple[str, str], float] = {}
        self._good_noted: dict[tuple[str, str], float] = {}

    async def check(self, source: str, hub: str) -> None:
        """Raise TooManyAttempts when this source, or this hub name for this source, is closed."""
        now = time.monotonic()
        if self._checked.get((source, hub), 0.0) > now:
            return
        blocked, hub_failures = await self._redis.mget(_key("block", source), _key("fails-hub", hub))
        if blocked:
            raise TooManyAttempts(retry_after=self._limits.window_seconds)
        if int(hub_failures or 0) >= self._limits.per_hub:
            if not await self._redis.sismember(_key("good", hub), source):
                raise TooManyAttempts(retry_after=self._limits.window_seconds)
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[(source, hub)] = now + CACHE_SECONDS

    async def failed(self, source: str, hub: str) -> None:
        window = self._limits.window_seconds
        self._checked.pop((source, hub), None)
        source_failures, _ = await self._count(
            keys=[_key("fails-source", source), _key("fails-hub", hub)], args=[window]
        )
        if int(source_failures) >= self._limits.per_source:
            await self._redis.set(_key("block", source), "1", ex=window)

    async def succeeded(self, source: str, hub: str) -> None:
        """Remember this source as the hub's own (at most once a minute per instance)."""
        now = time.monotonic()
        if self._good_noted.get((source, hub), 0.0) > now:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(_key("good", hub), source)
            pipe.expire(_key("good", hub), 7 * 86400)
            await pipe.execute()
        if len(self._good_noted) > 10_000:
            self._good_noted.clear()
        self._good_noted[(source, hub)] = now + GOOD_REFRESH_SECONDS

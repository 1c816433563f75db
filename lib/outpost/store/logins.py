"""The failed-login counters `outpost.ratelimit.LoginGuard` decides with; ids arrive hashed, never as sent."""

from __future__ import annotations

import redis.asyncio as aioredis

from outpost.store.keys import COUNT_IN_WINDOW, key_login

GOOD_SOURCE_DAYS = 7


class LoginCounters:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._count = client.register_script(COUNT_IN_WINDOW)

    async def standing(self, source: str, bucket: str) -> tuple[bool, int]:
        """Whether the source is blocked, and the failures counted in the hub bucket: one MGET."""
        blocked, hub_failures = await self._redis.mget(key_login("block", source), key_login("fails-hub", bucket))
        return bool(blocked), int(hub_failures or 0)

    async def known_source(self, bucket: str, source: str) -> bool:
        """Whether the source logged in as a hub of this bucket lately."""
        return bool(await self._redis.sismember(key_login("good", bucket), source))

    async def count_failure(self, source: str, bucket: str, window_seconds: int) -> int:
        """Count a failure of the source and of the bucket; answers the source's failures in its window."""
        source_failures, _ = await self._count(
            keys=[key_login("fails-source", source), key_login("fails-hub", bucket)], args=[window_seconds]
        )
        return int(source_failures)

    async def block(self, source: str, seconds: int) -> None:
        await self._redis.set(key_login("block", source), "1", ex=seconds)

    async def note_known_source(self, bucket: str, source: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key_login("good", bucket), source)
            pipe.expire(key_login("good", bucket), GOOD_SOURCE_DAYS * 86400)
            await pipe.execute()

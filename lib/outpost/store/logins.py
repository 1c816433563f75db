"""The failed-login counters `outpost.ratelimit.LoginGuard` decides with; ids arrive hashed, never as sent."""

from __future__ import annotations

import redis.asyncio as aioredis

from outpost.ratelimit import LoginLimits
from outpost.store.keys import COUNT_FAILURE, key_login


class LoginCounters:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._count = client.register_script(COUNT_FAILURE)

    async def blocked(self, source: str) -> bool:
        """Whether the source used up its failures in its window: one GET."""
        return bool(await self._redis.exists(key_login("block", source)))

    async def count_failure(self, source: str, bucket: str | None, limits: LoginLimits) -> bool:
        """Count a failure of the source (and of the hub bucket, if any) unless the source's budget is
        used up: True if counted, False if refused."""
        keys = [key_login("block", source), key_login("fails-source", source)]
        if bucket is not None:
            keys.append(key_login("fails-hub", bucket))
        args = [limits.window_seconds, limits.per_source, limits.per_hub]
        return bool(await self._count(keys=keys, args=args))

"""Shared snapshots: one process reads an expensive source (the Slurm controller's job list) for every process
of the outpost, and the others read its copy. A claim decides who refreshes, so a source is asked at most once
per interval however many function instances poll."""

from __future__ import annotations

import redis.asyncio as aioredis

from outpost.store.keys import key_snapshot, key_snapshot_claim

# A snapshot nobody refreshes any more (the backend was switched off) goes after this long.
SNAPSHOT_TTL_SECONDS = 7 * 86400


class SharedSnapshots:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def read(self, name: str) -> bytes | None:
        value = await self._redis.get(key_snapshot(name))
        return value.encode() if isinstance(value, str) else value

    async def write(self, name: str, value: bytes) -> None:
        await self._redis.set(key_snapshot(name), value, ex=SNAPSHOT_TTL_SECONDS)

    async def claim(self, name: str, interval_ms: int) -> bool:
        """Whether this caller refreshes `name` now: the first to ask within each interval."""
        return bool(await self._redis.set(key_snapshot_claim(name), b"1", nx=True, px=max(1, interval_ms)))

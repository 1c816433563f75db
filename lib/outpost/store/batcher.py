"""A generic read batcher: many HMGETs of the same fields share round trips under load."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from outpost.redis_client import reply
from outpost.store.keys import HMGET_MANY


class ReadBatcher:
    """Reads share round trips under load: with no read in flight one goes out at once; the
    reads that arrive meanwhile wait for it and then go out together, as one script call (a
    pipeline of HMGETs would pack and parse a command per read)."""

    def __init__(self, client: aioredis.Redis, fields: Sequence[str]) -> None:
        self._redis = client
        self._fields = list(fields)
        self._hmget_many = client.register_script(HMGET_MANY)
        self._busy = False
        self._queue: list[tuple[str, asyncio.Future[list[Any]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def hmget(self, key: str) -> list[Any]:
        if self._busy:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._queue.append((key, future))
            return await future
        self._busy = True
        try:
            values: list[Any] = await reply(self._redis.hmget(key, self._fields))
            return values
        finally:
            if self._queue:  # the reads that came meanwhile go out without holding up this answer
                task = asyncio.get_running_loop().create_task(self._drain())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._busy = False

    async def _drain(self) -> None:
        """Send what queued up while a read was in flight, until nothing is left."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await self._hmget_many(keys=[key for key, _ in batch], args=self._fields)
                except Exception as exc:  # the connection failed: every read in the batch did
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller gave up waiting
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._busy = False

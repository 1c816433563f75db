"""A non-blocking lock that expires by itself, so overlapping timer runs do nothing twice."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import LockError

from outpost.store.keys import key_lock

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def exclusively(client: aioredis.Redis, name: str, ttl_seconds: float) -> AsyncIterator[bool]:
    """Yields False when another run holds the lock `name`; redis-py's Lock does the token checks."""
    lock = client.lock(key_lock(name), timeout=ttl_seconds, blocking=False)
    if not await lock.acquire():
        yield False
        return
    try:
        yield True
    finally:
        try:
            await lock.release()
        except LockError:
            log.warning("lock %s outlived its %ss", name, ttl_seconds)

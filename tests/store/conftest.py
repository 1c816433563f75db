"""A store on the session's real redis-server, with a key of its own, for every store test that asks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from outpost.crypto import Crypt
from outpost.store import Store


@pytest_asyncio.fixture
async def store(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[Store]:
    client = aioredis.from_url(redis_url)
    yield Store(client, Crypt([Fernet.generate_key().decode()]))
    await client.aclose()

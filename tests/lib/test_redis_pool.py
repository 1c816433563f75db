"""More Redis commands in flight than a process has connections wait for a free one instead of failing:
a storm of starts is served, not answered 503 (bench/storm.py found it at 300 starts)."""

from __future__ import annotations

import asyncio

import pytest

from outpost.redis_client import REDIS_CONNECTIONS
from outpost.runtime import build_runtime
from outpost.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_more_commands_in_flight_than_connections_all_succeed(settings: Settings) -> None:
    runtime = build_runtime(settings)
    try:
        reads = [runtime.store.usage("hubA", f"user{i}", "small") for i in range(3 * REDIS_CONNECTIONS)]
        answers = await asyncio.gather(*reads)
    finally:
        await runtime.aclose()
    assert answers == [(0, 0, 0)] * (3 * REDIS_CONNECTIONS)

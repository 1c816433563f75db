"""Fixtures for fuzzing: one seeded Outpost per module on the shared Redis, checked after every test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from outpost.runtime import close_runtime, get_runtime, use_settings
from outpost.settings import HubOptions, Settings
from tests.conftest import METRICS_TOKEN, RUN_AS_OWN_USER, TINY_SERVER
from tests.fuzz.harness import (
    BASE_URL,
    FUZZ_OVERRIDES,
    HUBS,
    MAX_BODY_BYTES,
    STATS,
    Fuzz,
    HubCallbacks,
    install_hub_stand_in,
    make_seeds,
)
from tests.lib.test_credits import CONFIG as FUZZ_CREDITS


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def outpost(redis_url: str, router: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fuzz]:
    """An outpost with small limits, the tiny stand-in server, and a few seeded services."""
    tmp = tmp_path_factory.mktemp("fuzz")
    config = tmp / "outpost_config.py"
    config.write_text(
        f"c.LocalProcessBackend.cmd = [{sys.executable!r}, {str(TINY_SERVER)!r}]\n"
        "c.LocalProcessBackend.start_timeout = 20.0\n"
        "c.LocalProcessBackend.stop_timeout = 2.0\n" + RUN_AS_OWN_USER
    )
    options = HubOptions(allowed_overrides=FUZZ_OVERRIDES)
    settings = Settings(
        crypt_key=",".join(Fernet.generate_key().decode() for _ in range(2)),
        hub_usernames=";".join(HUBS),
        hub_passwords=";".join(HUBS.values()),
        redis_url=redis_url,
        data_dir=tmp / "data",
        backend_config=config,
        max_body_bytes=MAX_BODY_BYTES,
        max_per_user_total=3,  # the fuzzer's starts share one (empty) user name: at most 3 servers
        hub_options={hub: options for hub in HUBS},
        credits=FUZZ_CREDITS,
        hub_retries=1,
        hub_timeout_seconds=1.0,
        metrics_token=METRICS_TOKEN,
    )
    redis = aioredis.from_url(redis_url)
    await redis.flushdb()
    use_settings(settings)
    runtime = await get_runtime()
    callbacks = HubCallbacks()
    stand_in = install_hub_stand_in(runtime, callbacks)
    hubs = httpx.ASGITransport(app=router, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=hubs, base_url=BASE_URL, timeout=60) as client:
        fuzz = Fuzz(router, client, settings, redis, runtime, make_seeds(), tmp / "data", callbacks)
        await fuzz.start_seeds()
        yield fuzz
        try:
            await fuzz.stop_unseeded()
            for seed in fuzz.seeds:
                await fuzz.send("DELETE", seed.path, hub=seed.hub, expect={200}, bookkeeping=True)
            await fuzz.settle()
        finally:
            leftover = fuzz.server_processes()
            fuzz.kill(leftover)
    await stand_in.aclose()
    await close_runtime()
    use_settings(None)
    await redis.flushdb()
    await redis.aclose()
    assert not leftover, f"servers left running after fuzzing: {leftover}"


@pytest_asyncio.fixture(loop_scope="session")
async def fuzz(outpost: Fuzz) -> AsyncIterator[Fuzz]:
    """The module's outpost; after the test, the store and the seeded services are checked."""
    yield outpost
    await outpost.verify()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if STATS.requests or STATS.property_examples:
        terminalreporter.write_sep("-", "outpost fuzzing")
        for line in STATS.summary().splitlines():
            terminalreporter.write_line(line)

"""The timer's lock (`Store.exclusively`): one holder at a time, and it expires by itself."""

from __future__ import annotations

import asyncio

import pytest

from outpost.store import Store

pytestmark = pytest.mark.asyncio


async def test_a_held_lock_is_refused_to_others_and_free_after_release(store: Store) -> None:
    async with store.exclusively("tick", 5) as mine:
        assert mine
        async with store.exclusively("tick", 5) as again:
            assert not again
        async with store.exclusively("other", 5) as other:
            assert other
    async with store.exclusively("tick", 5) as after:
        assert after


async def test_a_lock_whose_holder_died_expires(store: Store) -> None:
    async with store.exclusively("tick", 0.2) as mine:
        assert mine
        await asyncio.sleep(0.4)  # outlived: the release only warns
        async with store.exclusively("tick", 5) as taken_over:
            assert taken_over

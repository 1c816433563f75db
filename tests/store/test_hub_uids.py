"""`Store.hub_uid`: one uid per hub from a range, allocated in one script, on a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from outpost.store import Store

pytestmark = pytest.mark.asyncio


async def test_a_burst_of_hubs_gets_one_uid_each_and_no_uid_twice(store: Store) -> None:
    hubs = [f"hub{i % 20}" for i in range(100)]  # each hub asks five times at once, as concurrent starts would
    uids = await asyncio.gather(*(store.hub_uid(hub, 70000, 70099, [70001]) for hub in hubs))
    given = dict(zip(hubs, uids, strict=True))
    assert all(given[hub] == uid for hub, uid in zip(hubs, uids, strict=True))  # one uid per hub, whoever asked
    assert len(set(given.values())) == 20 and 70001 not in given.values()
    assert set(given.values()) <= set(range(70000, 70100))


async def test_a_used_up_range_gives_none_and_a_moved_range_a_new_uid(store: Store) -> None:
    assert await store.hub_uid("hubA", 70000, 70000, []) == 70000
    assert await store.hub_uid("hubB", 70000, 70000, []) is None  # hubA's for ever
    assert await store.hub_uid("hubA", 70000, 70000, []) == 70000
    assert await store.hub_uid("hubA", 80000, 80001, [80000]) == 80001  # outside the range now: a new one
    assert await store.hub_uid("hubB", 70000, 70001, []) == 70001  # 70000 stays hubA's old one, never reused

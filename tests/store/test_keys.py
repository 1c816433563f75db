"""The key layout and the Lua scripts (`outpost.store.keys`): names from requests never collide or escape
their place, and every script compiles on a real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from outpost.models import ServiceId
from outpost.store import keys
from outpost.store.keys import (
    key_certs,
    key_flavor_slots,
    key_index,
    key_login,
    key_once,
    key_record,
    key_tombstone,
    key_tunnel_claim,
    key_user_slots,
    slot_keys,
)


def test_a_colon_in_a_name_cannot_make_two_services_share_a_record() -> None:
    one, other = ServiceId("hub", "a:svc:b", "1"), ServiceId("hub:svc:a", "b", "1")
    assert key_record(one) != key_record(other)
    assert key_record(one) == "outpost:hub:hub:svc:a%3Asvc%3Ab:1"
    assert key_tombstone(one) != key_tombstone(other)


def test_a_services_keys_are_built_from_its_record_key() -> None:
    sid = ServiceId("hub A", "lab/1", "x")
    assert key_record(sid) == "outpost:hub:hub%20A:svc:lab%2F1:x"
    assert key_certs(sid) == key_record(sid) + ":certs"
    assert key_tunnel_claim(sid) == key_record(sid) + ":tunnel"
    assert key_index("hub A") == "outpost:hub:hub%20A:services"
    assert key_tombstone(sid) == "outpost:stopped:hub%20A:lab%2F1:x"


def test_slot_counters_of_a_user_per_flavor_and_in_total_differ() -> None:
    assert slot_keys("hubA", "alice", "gpu") == [
        key_flavor_slots("gpu"),
        key_user_slots("hubA", "alice", "gpu"),
        key_user_slots("hubA", "alice"),
    ]
    assert key_user_slots("hubA", "alice:gpu") != key_user_slots("hubA", "alice", "gpu")
    assert key_user_slots("hubA", "alice", "") != key_user_slots("hubA", "alice")


def test_markers_and_login_counters_have_their_own_prefixes() -> None:
    assert key_once("/outpost/api:start:a:b:1") == "outpost:once:/outpost/api:start:a:b:1"
    assert key_login("block", "abc") == "outpost:auth:block:abc"
    assert keys.RECORD_INDEXES.replace("*", "hubA") == key_index("hubA")


SCRIPTS = ["CREATE", "IMPORT", "FORGET", "ADOPT", "TRANSITION", "CLAIM", "END", "ONCE", "REPLACE_IF", "OWNER",
           "OBSERVE", "HMGET_MANY", "CLAIM_TUNNEL", "COUNT_FAILURE",
           "ALLOCATE_UID", "MARK_TUNNELLED"]  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.parametrize("name", SCRIPTS)
async def test_every_script_compiles(redis: aioredis.Redis, name: str) -> None:
    sha = await redis.script_load(getattr(keys, name))
    assert (await redis.script_exists(sha)) == [True]


def test_the_list_of_scripts_is_complete() -> None:
    found = {
        name
        for name, value in vars(keys).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str) and "redis." in value
    }
    assert found == set(SCRIPTS)

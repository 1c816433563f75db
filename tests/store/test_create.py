"""`Store.create`: the create script is the one place a start's quota is decided, with the counts of that moment;
`quota.refused` words its one answer for the hub. Real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from outpost import errors
from outpost.flavors import Admission, FlavorLimits, FlavorPolicy, admission
from outpost.lifecycle import quota
from outpost.models import ServiceId
from outpost.store import Created, Store, Usage
from outpost.store.keys import slot_keys
from tests.lib.test_flavors import policy

pytestmark = pytest.mark.asyncio


async def counted(redis: aioredis.Redis, flavor: str, usage: Usage, user: str = "alice") -> None:
    """As if `usage` servers held slots already (other hubs' included, in the flavor's count)."""
    await redis.mset(dict(zip(slot_keys("hubA", user, flavor), usage, strict=True)))


async def start(store: Store, decision: Admission, flavor: str | None, name: str = "new") -> Created:
    return await store.create(
        ServiceId("hubA", name, "1"), user="alice", user_id="1", flavor=flavor, body={}, certs=None,
        limits=decision.limits,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flavor", "usage", "error", "message"),
    [
        pytest.param(
            "gpu",
            Usage(10, 0, 0),
            errors.FlavorFull,
            "Flavor 'gpu' is full (10 of 10 in use). Try again later or choose another flavor.",
            id="full",
        ),
        pytest.param(
            "gpu",
            Usage(1, 2, 2),
            errors.UserOverLimit,
            "You already run 2 of the 2 servers each user may run with flavor 'gpu'. Stop one before starting another.",
            id="per-user",
        ),
        pytest.param(
            "cpu",
            Usage(100, 0, 3),
            errors.UserOverLimit,
            "You already run 3 of the 3 servers each user may run on this Outpost. Stop one before starting another.",
            id="global",
        ),
        pytest.param(
            "big",
            Usage(3, 2, 2),
            errors.FlavorFull,
            "Flavor 'big' is full (3 of 3 in use). Try again later or choose another flavor.",
            id="full-before-global",
        ),
    ],
)
async def test_a_reached_limit_refuses_with_the_count_the_script_found(
    store: Store, redis: aioredis.Redis, flavor: str, usage: Usage, error: type[errors.OutpostError], message: str
) -> None:
    await counted(redis, flavor, usage)
    decision = admission(policy(maxPerUserTotal=3), "hubA", {"name": "alice"}, flavor)
    assert decision.allowed
    created = await start(store, decision, flavor)
    assert not created.ok
    refused = quota.refused(decision, flavor, created)
    assert (type(refused), refused.message) == (error, message)
    assert await store.usage("hubA", "alice", flavor) == usage  # nothing taken
    assert await store.meta(ServiceId("hubA", "new", "1")) is None  # nothing stored


async def test_under_every_limit_a_start_takes_one_slot_of_each(store: Store, redis: aioredis.Redis) -> None:
    hubs = {"h": {"jupyterhub_name": "hubA", "flavorsOverride": {"gpu": {"max": 4, "maxPerUser": -1}}}}
    await counted(redis, "gpu", Usage(3, 9, 4))
    decision = admission(policy(hubs=hubs, maxPerUserTotal=5), "hubA", None, "gpu")
    assert await start(store, decision, "gpu") == Created(ok=True)
    assert await store.usage("hubA", "alice", "gpu") == Usage(4, 10, 5)
    full = await start(store, decision, "gpu", name="next")
    assert (full.ok, full.refusal, full.count) == (False, "flavor_full", 4)
    assert "(4 of 4 in use)" in quota.refused(decision, "gpu", full).message


async def test_without_flavors_only_the_global_limit_counts(store: Store, redis: aioredis.Redis) -> None:
    decision = admission(FlavorPolicy.from_values({"maxPerUserTotal": 2}), "hubA", None, None)
    assert decision.limits == FlavorLimits(user_total_max=2)
    await counted(redis, "", Usage(50, 50, 1))
    assert (await start(store, decision, None)).ok
    refused = await start(store, decision, None, name="third")
    assert (refused.refusal, refused.count) == ("user_total_limit", 2)
    assert isinstance(quota.refused(decision, "", refused), errors.UserOverLimit)


async def test_a_second_start_of_a_service_is_told_it_exists_unless_a_limit_is_reached_first(store: Store) -> None:
    decision = admission(policy(), "hubA", None, "big")  # big: 3 at most
    assert (await start(store, decision, "big")).ok
    again = await start(store, decision, "big")
    assert again == Created(ok=False, refusal="exists")
    assert isinstance(quota.refused(decision, "big", again), errors.ServiceExists)
    for name in ("two", "three"):
        assert (await start(store, decision, "big", name=name)).ok
    # The limits are checked first: a user at a limit hears of the limit, also for a service that exists.
    assert (await start(store, decision, "big")).refusal == "flavor_full"


async def test_concurrent_starts_never_exceed_a_limit(redis_url: str, store: Store) -> None:
    decision = admission(policy(), "hubA", None, "big")
    clients = [aioredis.from_url(redis_url) for _ in range(12)]  # one connection each: the starts really race
    stores = [Store(client, store.crypt) for client in clients]
    results = await asyncio.gather(*(start(s, decision, "big", name=f"s{i}") for i, s in enumerate(stores)))
    assert sum(result.ok for result in results) == 3
    assert {(r.refusal, r.count) for r in results if not r.ok} == {("flavor_full", 3)}
    assert (await store.usage("hubA", "alice", "big")).flavor_total == 3
    for client in clients:
        await client.aclose()


async def test_a_create_whose_answer_is_lost_is_undone_and_takes_no_slot(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran the create but its answer never came (the primary went away, the retries ran out): the hub
    hears 503 for a start that may or may not be recorded, so it is undone rather than left holding a slot."""
    create = store._create

    async def answer_lost(**kwargs: Any) -> Any:
        await create(**kwargs)
        raise redis.exceptions.ConnectionError("the primary went away")

    monkeypatch.setattr(store, "_create", answer_lost)
    with pytest.raises(redis.exceptions.ConnectionError):
        await start(store, admission(policy(), "hubA", None, "big"), "big")
    assert not await store.exists(ServiceId("hubA", "new", "1"))
    assert await store.usage("hubA", "alice", "big") == Usage(0, 0, 0)

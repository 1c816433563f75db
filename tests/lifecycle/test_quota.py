"""Flavors through the API: menus, admission, exact counting under concurrency, expiry, updates, overrides."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from outpost.lifecycle.timer import expire_services
from outpost.runtime import get_runtime
from outpost.settings import Settings
from outpost.store.keys import key_index
from tests.conftest import TINY_ENV, HubReceiver, basic, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
A, B = basic("hubA"), basic("hubB")
FLAVORS = {
    "small": {"display_name": "Small", "max": 10, "weight": 1, "resources": {"mem_limit": "1G"}},
    "gpu": {"max": 2, "maxPerUser": 1, "weight": 5, "runtime": {"hours": 1}},
    "secret": {"max": -1},
}
USERS = {
    "gpu-people": {"authentication": {"groups": ["gpu"]}, "flavors": ["small", "gpu"], "weight": 10},
    "banned": {"authentication": {"name": "mallory"}, "forbidden": True, "weight": 20},
}
HUBS = {"hub-b": {"jupyterhub_name": "hubB", "flavors": ["small"]}}


@pytest.fixture
def flavored(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return make_settings(flavors=FLAVORS, users=USERS, hubs=HUBS, **overrides)

    return make


def flavored_body(flavor: str, start_id: str = "1", user: str = "alice", **extra: Any) -> dict[str, Any]:
    body = start_body(start_id=start_id, user=user, **extra)
    body["user_options"]["flavor"] = flavor
    return body


async def stop_all(api: httpx.AsyncClient, headers: dict[str, str] = A) -> None:
    for service in (await api.get("/services", headers=headers)).json():
        response = await api.delete(f"/services/{service['name']}/{service['start_id']}", headers=headers)
        assert response.status_code == 200


async def test_flavor_menu_counts_live_usage(api: httpx.AsyncClient, flavored: Callable[..., Settings]) -> None:
    flavored()
    menu = (await api.get("/flavors/", headers=A)).json()
    assert set(menu) == {"small", "gpu", "secret"}
    assert menu["gpu"] == {
        "max": 2, "maxPerUser": 1, "weight": 5, "display_name": "gpu", "description": "",
        "runtime": {"hours": 1}, "current": 0,
    }  # fmt: skip
    assert (await api.post("/services", json=flavored_body("small"), headers=A)).status_code == 200
    assert (await api.get("/flavors", headers=A)).json()["small"]["current"] == 1
    assert (await api.get("/flavors", headers=B)).json() == {"small": {**menu["small"], "current": 1}}
    await stop_all(api)
    assert (await api.get("/flavors", headers=A)).json()["small"]["current"] == 0


async def test_user_flavors_narrow_to_the_users_rules(
    api: httpx.AsyncClient, flavored: Callable[..., Settings]
) -> None:
    flavored()
    gpu_user = await api.post("/userflavors", json={"name": "bob", "groups": ["gpu"]}, headers=A)
    assert set(gpu_user.json()) == {"small", "gpu"}
    assert (await api.post("/userflavors", json={"name": "mallory"}, headers=A)).json() == {}
    assert (await api.post("/userflavors", content=b"[1]", headers=A)).status_code == 400


@pytest.mark.parametrize(
    ("headers", "body", "refusal", "words"),
    [
        (A, flavored_body("huge"), "FlavorNotAllowed", "You may not use flavor 'huge'"),
        (B, flavored_body("gpu"), "FlavorNotAllowed", "You may not use flavor 'gpu'"),
        (A, {**flavored_body("gpu"), "authentication": {"name": "mallory"}}, "FlavorNotAllowed", "No flavor"),
        (A, start_body(), "FlavorNotAllowed", "No flavor was chosen"),
    ],
)
async def test_starts_outside_the_rules_are_refused_before_anything_is_stored(
    api: httpx.AsyncClient,
    flavored: Callable[..., Settings],
    redis: aioredis.Redis,
    headers: dict[str, str],
    body: dict[str, Any],
    refusal: str,
    words: str,
) -> None:
    flavored()
    response = await api.post("/services", json=body, headers=headers)
    assert response.status_code == 419
    assert response.json()["class"] == refusal and words in response.json()["args"][0]
    assert await redis.scard(key_index("hubA")) == 0 and await redis.scard(key_index("hubB")) == 0


async def test_per_user_and_global_limits(api: httpx.AsyncClient, flavored: Callable[..., Settings]) -> None:
    flavored(max_per_user_total=2)
    assert (await api.post("/services", json=flavored_body("gpu", "1"), headers=A)).status_code == 200
    second_gpu = await api.post("/services", json=flavored_body("gpu", "2"), headers=A)
    assert second_gpu.status_code == 419 and second_gpu.json()["class"] == "UserOverLimit"
    assert "1 of the 1" in second_gpu.json()["args"][0]
    assert (await api.post("/services", json=flavored_body("small", "3"), headers=A)).status_code == 200
    third = await api.post("/services", json=flavored_body("secret", "4"), headers=A)
    assert third.status_code == 419 and "2 of the 2 servers each user may run" in third.json()["args"][0]
    # Another user is not limited by alice's servers; the flavor's own max still holds.
    assert (await api.post("/services", json=flavored_body("gpu", "5", user="bob"), headers=A)).status_code == 200
    full = await api.post("/services", json=flavored_body("gpu", "6", user="carol"), headers=A)
    assert full.status_code == 419 and full.json()["class"] == "FlavorFull"
    assert full.json()["args"][0].startswith("Flavor 'gpu' is full (2 of 2 in use)")
    await stop_all(api)


async def test_concurrent_starts_never_exceed_the_flavor_limit(
    api: httpx.AsyncClient, flavored: Callable[..., Settings], redis: aioredis.Redis
) -> None:
    flavored()
    bodies = [flavored_body("small", str(i), user=f"user{i}") for i in range(50)]
    responses = await asyncio.gather(*(api.post("/services", json=b, headers=A) for b in bodies))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 10 and codes.count(419) == 40, codes
    assert {r.json()["class"] for r in responses if r.status_code == 419} == {"FlavorFull"}
    assert (await api.get("/flavors", headers=A)).json()["small"]["current"] == 10
    assert await redis.scard(key_index("hubA")) == 10
    await stop_all(api)
    assert (await api.get("/flavors", headers=A)).json()["small"]["current"] == 0
    assert int(await redis.get("outpost:slots:flavor:small") or 0) == 0


async def test_a_failed_start_frees_its_slot(api: httpx.AsyncClient, flavored: Callable[..., Settings]) -> None:
    flavored(hub_options=TINY_ENV)
    body = flavored_body("gpu")
    body["env"]["TINY_EXIT_CODE"] = "1"
    assert (await api.post("/services", json=body, headers=A)).status_code == 419
    assert (await api.get("/flavors", headers=A)).json()["gpu"]["current"] == 0
    assert (await api.post("/services", json=flavored_body("gpu"), headers=A)).status_code == 200
    await stop_all(api)


async def test_flavor_resources_reach_the_server(api: httpx.AsyncClient, flavored: Callable[..., Settings]) -> None:
    flavored()
    address = (await api.post("/services", json=flavored_body("small"), headers=A)).json()["service"]
    async with httpx.AsyncClient() as direct:
        assert (await direct.get(address)).json()["limits"] == {"MEM_LIMIT": "1G"}
    await stop_all(api)


async def test_expiry_stops_only_services_past_their_runtime_once(
    api: httpx.AsyncClient, flavored: Callable[..., Settings], hub_receiver: HubReceiver
) -> None:
    flavored()
    assert (await api.post("/services", json=flavored_body("gpu", hub_url=hub_receiver.url), headers=A)).is_success
    assert (await api.post("/services", json=flavored_body("small", "2"), headers=A)).is_success
    runtime = await get_runtime()
    assert await expire_services(runtime) == 0  # nothing has run for an hour yet
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1, minutes=1)
    results = await asyncio.gather(expire_services(runtime, later), expire_services(runtime, later))
    assert sorted(results) == [0, 1]
    assert [s["start_id"] for s in (await api.get("/services", headers=A)).json()] == ["2"]
    events = [c["json"] for c in hub_receiver.of("/hub/api/users/progress/events/alice/srv")]
    assert sum(1 for e in events if e.get("failed") and "runtime limit" in e["message"]) == 1
    assert await expire_services(runtime, later) == 0
    await stop_all(api)


async def test_flavor_updates_reach_the_hub_after_start_and_stop(
    api: httpx.AsyncClient, flavored: Callable[..., Settings], hub_receiver: HubReceiver
) -> None:
    flavored()
    body = flavored_body("small", hub_url=hub_receiver.url)
    body["env"]["JUPYTERHUB_FLAVORS_UPDATE_URL"] = f"{hub_receiver.url}/hub/api/outpostflavors/hubA"
    body["env"]["JUPYTERHUB_FLAVORS_UPDATE_TOKEN"] = "flavor-token"
    assert (await api.post("/services", json=body, headers=A)).status_code == 200
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200
    updates = hub_receiver.of("/hub/api/outpostflavors/hubA")
    assert [u["json"]["small"]["current"] for u in updates] == [1, 0]
    assert {u["authorization"] for u in updates} == {"token flavor-token"}


async def test_configured_flavor_token_is_used_when_the_hub_sends_none(
    api: httpx.AsyncClient, flavored: Callable[..., Settings], hub_receiver: HubReceiver
) -> None:
    flavored(hub_options={"hubA": {"flavorsUpdateToken": "configured-token"}})
    body = flavored_body("small", hub_url=hub_receiver.url)
    body["env"]["JUPYTERHUB_FLAVORS_UPDATE_URL"] = f"{hub_receiver.url}/flavors-update"
    assert (await api.post("/services", json=body, headers=A)).status_code == 200
    assert hub_receiver.of("/flavors-update")[0]["authorization"] == "token configured-token"
    await stop_all(api)


@pytest.mark.parametrize(
    ("allowed", "refused"),
    [("none", "ip, port"), (["port"], "ip"), (["port", "ip"], None), ("all", None)],
)
async def test_override_policy_per_hub(
    api: httpx.AsyncClient, make_settings: Callable[..., Settings], allowed: Any, refused: str | None
) -> None:
    make_settings(hub_options={"hubA": {"allowedOverrides": allowed}})
    body = start_body()
    body["misc"] = {"port": 0, "ip": "127.0.0.1"}
    response = await api.post("/services", json=body, headers=A)
    if refused is None:
        assert response.status_code == 200
        await stop_all(api)
    else:
        assert response.status_code == 419 and response.json()["class"] == "OverrideNotAllowed"
        assert response.json()["args"][0] == f"This outpost does not allow overriding: {refused}."
    # Other hubs keep the default: what the OutpostSpawner sends, port and ip included.
    assert (await api.post("/services", json=body, headers=B)).status_code == 200
    await stop_all(api, B)


async def test_admin_hooks_from_outpost_config(
    api: httpx.AsyncClient, make_settings: Callable[..., Settings], backend_config: Path
) -> None:
    backend_config.write_text(
        backend_config.read_text()
        + "c.Outpost.allow_override = lambda hub, key, value: key != 'cmd'\n"
        + "c.Outpost.sanitize_start_response = lambda hub, name, address: address.replace('http://', 'https://')\n"
        + "c.Outpost.normalise_authentication = lambda auth: {**auth, 'name': auth['name'].lower()}\n"
    )
    make_settings(flavors=FLAVORS, users=USERS, hub_options={"hubA": {"allowedOverrides": "all"}})
    body = flavored_body("small")
    body["misc"]["cmd"] = ["/bin/false"]  # the policy allows it: the hook refuses it
    refused = await api.post("/services", json=body, headers=A)
    assert refused.status_code == 419 and "cmd" in refused.json()["args"][0]
    answer = await api.post("/services", json=flavored_body("small"), headers=A)
    assert answer.json()["service"].startswith("https://127.0.0.1:")
    banned = await api.post("/userflavors", json={"name": "MALLORY"}, headers=A)
    assert banned.json() == {}
    await stop_all(api)

"""Attacks by hubB on what upstream's surface adds: the credits routes, upstream's hooks fed hostile input,
and the base path. hubB holds its own password and key, nothing of hubA's."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.stack import Stack, decoded, launch, shut_down, start_body

CREDITS = {
    "credits": {"shared": {"cap": 10}, "partner": {"cap": 1000}},
    "hubs": {"a-only": {"jupyterhub_name": ["hubA"], "credits": ["partner"]},
             "b": {"jupyterhub_name": ["hubB"], "credits": ["shared"]}},
    "users": {"vip": {"authentication": {"name": "vip"}, "hubs": ["hubA"], "credits": ["partner"], "weight": 5}},
}  # fmt: skip
HOOKS = """
async def lower(authentication):
    return {**authentication, "name": authentication["name"].lower()}
c.JupyterHubOutpost.update_user_authentication = lower

async def no_images(jupyterhub_name, misc):
    return "image" not in misc
c.JupyterHubOutpost.allow_override = no_images

c.JupyterHubOutpost.sanitize_start_response = lambda spawner, response: f"{spawner.user.name}:{spawner.port}"
"""


@pytest.fixture(scope="module")
def stack(stack_dir: Path) -> Iterator[Stack]:
    running = launch(stack_dir, f"security-{secrets.token_hex(4)}", values={"credits": CREDITS},
                     backend_lines=HOOKS, env={"OUTPOST_BASE_PATH": "/outpost"})  # fmt: skip
    yield running
    shut_down(running)  # also: no traceback in the outpost's log


def test_a_hub_cannot_claim_another_hubs_credits(stack: Stack) -> None:
    with stack.api("hubB") as api:
        for claim in ({"name": "vip"}, {"name": "VIP", "jupyterhub_name": "hubA"}, {"name": "vip", "hubs": ["hubA"]}):
            assert decoded(api.post("/usercredits", json=claim)) == {"shared": {"cap": 10}}, claim
        assert decoded(api.get("/credits/", params={"jupyterhub_name": "hubA"})) == {"shared": {"cap": 10}}
    with stack.api("hubA") as api:  # the control: hubA's vip gets the partner credits
        assert decoded(api.post("/usercredits", json={"name": "VIP"})) == {"partner": {"cap": 1000}}


def test_hostile_authentication_cannot_break_the_administrators_hook(stack: Stack) -> None:
    with stack.api("hubB") as api:
        for body in ({"name": 5}, {"name": None}, {"groups": ["x"]}, {"name": {"$ne": ""}}, {"name": ["a"] * 1000}):
            answer = api.post("/usercredits", json=body)
            assert answer.status_code == 400, (body, answer.text)
            assert api.post("/userflavors", json=body).status_code == 400, body
        assert api.get("/ping").status_code == 200


def test_overrides_the_hook_refuses_never_reach_the_backend(stack: Stack) -> None:
    body = start_body(name="imaged")
    body["misc"] = {"image": "attacker/evil"}
    refused = stack.start("hubB", body)
    assert refused.status_code == 419 and "image" in decoded(refused)["args"][0]
    assert stack.record_keys() == set()


def test_the_base_path_is_a_prefix_not_a_substring(stack: Stack) -> None:
    tenant = stack.tenants["hubB"]
    root = f"http://127.0.0.1:{stack.api_port}"
    with httpx.Client(base_url=root, headers=tenant.auth, timeout=10) as api:
        for path in ("/outpostx/services", "/xoutpost/services", "/outpost-services", "/services/outpost"):
            assert api.get(path).status_code == 404, path
        assert api.get("/outpost/services").status_code == 200
        assert api.get("/outpost/services", headers={"Authorization": "Basic eDp5"}).status_code == 401

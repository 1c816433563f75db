"""A hub learns its own flavor menu and nothing else: asking for a flavor it may not use and for one
that does not exist gives the same answer, and neither stores anything."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.stack import Stack, decoded, launch, shut_down, start_body

FLAVORS = {"small": {"max": 10, "weight": 1}, "gpu": {"max": 2, "weight": 5}}
HUB_RULES = {"hub-a": {"jupyterhub_name": "hubA", "flavors": ["small"]}}  # hubB may use both


@pytest.fixture(scope="module")
def flavored(stack_dir: Path) -> Iterator[Stack]:
    values = {"flavors": FLAVORS, "hubs": HUB_RULES}
    running = launch(stack_dir, f"security-{secrets.token_hex(4)}", values=values)
    yield running
    shut_down(running)


def refusal(stack: Stack, flavor: str) -> tuple[int, dict[str, object]]:
    body = start_body("srv", secrets.token_hex(4))
    body["user_options"]["flavor"] = flavor
    answer = stack.start("hubA", body)
    return answer.status_code, decoded(answer)


def test_another_hubs_flavor_and_a_made_up_one_are_refused_alike(flavored: Stack) -> None:
    with flavored.api("hubA") as api:
        assert set(api.get("/flavors").json()) == {"small"}  # gpu exists, but only for hubB
    status, forbidden = refusal(flavored, "gpu")
    made_up_status, made_up = refusal(flavored, "gpu2")
    assert status == made_up_status == 419
    assert forbidden["class"] == made_up["class"] == "FlavorNotAllowed"
    assert forbidden["args"] == ["You may not use flavor 'gpu'. Choose one of: small."]
    assert made_up["args"] == ["You may not use flavor 'gpu2'. Choose one of: small."]
    assert {k: v for k, v in forbidden.items() if k != "args"} == {k: v for k, v in made_up.items() if k != "args"}
    assert flavored.record_keys() == set()
    with flavored.redis() as redis:
        assert not list(redis.scan_iter(match="outpost:slots:*"))

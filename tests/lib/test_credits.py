"""Credit rules: hub sets, user sets, overrides and `forbidden`, matched with the flavor rules' machinery."""

from __future__ import annotations

from typing import Any

import pytest

from outpost.credits import FORBIDDEN, CreditConfigError, CreditPolicy, hub_credits, user_credits

CONFIG: dict[str, Any] = {
    "credits": {
        "standard": {"cap": 100, "grant_value": 10, "grant_interval": 600},
        "gpu": {"cap": 40, "grant_value": 2, "grant_interval": 3600},
    },
    "hubs": {
        "partners": {
            "jupyterhub_name": ["hubB"],
            "weight": 5,
            "credits": ["standard"],
            "creditsOverride": {"standard": {"cap": 20}},
        },
        "everyone": {"jupyterhub_name": "hub.*", "weight": 1},
    },  # fmt: skip
    "users": {
        "gpu-group": {
            "authentication": {"groups": ["gpu-users"]},
            "weight": 10,
            "credits": ["gpu"],
            "creditsOverride": {"gpu": {"grant_value": 4}},
        },
        "blocked": {"authentication": {"name": "guest-*"}, "weight": 20, "forbidden": True},
    },  # fmt: skip
}
STANDARD, GPU = CONFIG["credits"]["standard"], CONFIG["credits"]["gpu"]


@pytest.fixture
def policy() -> CreditPolicy:
    return CreditPolicy.from_values(CONFIG)


def test_hub_sets_pick_and_override(policy: CreditPolicy) -> None:
    assert hub_credits(policy, "hubB") == {"standard": {**STANDARD, "cap": 20}}
    assert hub_credits(policy, "hubA") == {"standard": STANDARD, "gpu": GPU}  # "hub.*" as a regex
    assert hub_credits(policy, "lab") == {"standard": STANDARD, "gpu": GPU}  # no set: all


def test_the_heavier_hub_set_wins_whatever_the_order() -> None:
    reordered = {**CONFIG, "hubs": dict(reversed(list(CONFIG["hubs"].items())))}
    assert hub_credits(CreditPolicy.from_values(reordered), "hubB") == {"standard": {**STANDARD, "cap": 20}}


def test_user_sets_match_lists_and_globs(policy: CreditPolicy) -> None:
    alice = {"name": "alice", "groups": ["staff", "gpu-users"]}
    assert user_credits(policy, "hubB", alice) == {"gpu": {**GPU, "grant_value": 4}}
    guest = {"name": "guest-7", "groups": ["gpu-users"]}  # both sets match; the heavier forbids
    assert user_credits(policy, "hubA", guest) == FORBIDDEN == {"cap": 0, "grant_value": 0, "grant_interval": 86400}
    assert user_credits(policy, "hubB", {"name": "bob"}) == hub_credits(policy, "hubB")
    assert user_credits(policy, "hubB", {}) == hub_credits(policy, "hubB")


def test_a_hub_sets_override_carries_into_a_user_set() -> None:
    config = {**CONFIG, "users": {"all-standard": {"authentication": {"name": ".*"}, "credits": ["standard"],
                                                   "creditsOverride": {"standard": {"grant_value": 1}}}}}  # fmt: skip
    policy = CreditPolicy.from_values(config)
    assert user_credits(policy, "hubB", {"name": "x"}) == {"standard": {**STANDARD, "cap": 20, "grant_value": 1}}
    assert user_credits(policy, "hubA", {"name": "x"}) == {"standard": {**STANDARD, "grant_value": 1}}


def test_negation_hub_restriction_and_normaliser() -> None:
    config = {**CONFIG, "users": {
        "outsiders": {"authentication": {"name": "staff-.*"}, "negate_authentication": True, "credits": ["standard"]},
        "gpu-on-a": {"authentication": {"name": "ALICE"}, "hubs": ["hubA"], "weight": 5, "credits": ["gpu"]},
    }}  # fmt: skip
    policy = CreditPolicy.from_values(config)
    assert user_credits(policy, "hubA", {"name": "guest"}) == {"standard": STANDARD}
    assert user_credits(policy, "hubA", {"name": "staff-1"}) == hub_credits(policy, "hubA")
    assert user_credits(policy, "hubA", {"name": "alice"}, lambda a: {**a, "name": a["name"].upper()}) == {"gpu": GPU}
    # gpu-on-a is for hubA only: the negated set matches, with hubB's override
    assert user_credits(policy, "hubB", {"name": "ALICE"}) == {"standard": {**STANDARD, "cap": 20}}


def test_answers_are_copies(policy: CreditPolicy) -> None:
    hub_credits(policy, "hubA")["standard"]["cap"] = 1
    assert hub_credits(policy, "hubA")["standard"]["cap"] == 100


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"credits": {"a": {}}, "hubs": {"h": {"jupyterhub_name": "x", "credits": ["b"]}}},
         "credits.hubs.h.credits: unknown credit 'b'"),
        ({"credits": {"a": {}}, "users": {"u": {"creditsOverride": {"b": {"cap": 1}}}}},
         "credits.users.u.creditsOverride.b: unknown credit"),
        ({"credits": {"a": {}, "b": {}}, "users": {"u": {"credits": ["a"], "creditsOverride": {"b": {}}}}},
         "credits.users.u.creditsOverride.b: not listed in credits.users.u.credits"),
        ({"credits": {"a": 5}}, "credits.credits.a: must be a mapping"),
        ({"credits": {}, "users": {"u": {"forbiden": True}}}, "credits.users.u.forbiden: unknown key"),
        ({"hubs": {"h": {}}}, "credits.hubs.h.jupyterhub_name: is required"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(CreditConfigError) as raised:
        CreditPolicy.from_values(config)
    assert problem in str(raised.value)

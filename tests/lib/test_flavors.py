"""Flavor rules, the `/flavors` menu and admission: table-driven, no I/O.

Whether a limit is reached is the store's create script's to decide: tests/store/test_create.py."""

from __future__ import annotations

from typing import Any

import pytest

from outpost.flavors import (
    Admission,
    FlavorLimits,
    FlavorPolicy,
    Refusal,
    admission,
    allowed_flavors,
    counted_refusal,
    flavor_menu,
    refusal_message,
    runtime_seconds,
)

FLAVORS: dict[str, Any] = {
    "cpu": {"max": -1, "weight": 1, "display_name": "2 GB, 1 CPU", "description": "Small."},
    "gpu": {"max": 10, "maxPerUser": 2, "weight": 5, "runtime": {"hours": 2}, "resources": {"gpu": 1}},
    "big": {"max": 3, "weight": 9, "runtime": {"days": 1, "minutes": 30}},
}


def policy(**values: Any) -> FlavorPolicy:
    return FlavorPolicy.from_values({"flavors": FLAVORS, **values})


USER_CASES = [
    pytest.param({}, "hubA", {"name": "alice"}, ["cpu", "gpu", "big"], id="no-user-rules"),
    pytest.param(
        {"staff": {"authentication": {"name": ".*@mycomp.org"}, "flavors": ["gpu"]}},
        "hubA",
        {"name": "a@mycomp.org"},
        ["gpu"],
        id="regex-rule",
    ),
    pytest.param(
        {"staff": {"authentication": {"name": ".*@mycomp.org"}, "flavors": ["gpu"]}},
        "hubA",
        {"name": "a@other.org"},
        ["cpu", "gpu", "big"],
        id="no-match-falls-back-to-hub",
    ),
    pytest.param(
        {"gpu": {"authentication": {"groups": ["gpu-users"]}, "flavors": ["gpu", "big"]}},
        "hubA",
        {"name": "x", "groups": ["staff", "gpu-users"]},
        ["gpu", "big"],
        id="groups-any-element",
    ),
    pytest.param(
        {
            "outsiders": {
                "authentication": {"name": "*@mycomp.org"},
                "negate_authentication": True,
                "flavors": ["cpu"],
            }
        },
        "hubA",
        {"name": "a@other.org"},
        ["cpu"],
        id="negate-applies-to-non-matching",
    ),
    pytest.param(
        {
            "outsiders": {
                "authentication": {"name": "*@mycomp.org"},
                "negate_authentication": True,
                "flavors": ["cpu"],
            }
        },
        "hubA",
        {"name": "a@mycomp.org"},
        ["cpu", "gpu", "big"],
        id="negate-skips-matching",
    ),
    pytest.param(
        {"banned": {"authentication": {"name": ["mallory"]}, "forbidden": True, "flavors": ["cpu"]}},
        "hubA",
        {"name": "mallory"},
        [],
        id="forbidden",
    ),
    pytest.param(
        {
            "outsiders": {
                "authentication": {"name": ".*@mycomp.org"},
                "negate_authentication": True,
                "forbidden": True,
            }
        },
        "hubA",
        {"name": "a@other.org"},
        [],
        id="negate-forbidden",
    ),
    pytest.param(
        {
            "low": {"authentication": {"name": "a.*"}, "flavors": ["cpu"], "weight": 1},
            "high": {"authentication": {"name": "al.*"}, "flavors": ["big"], "weight": 7},
        },
        "hubA",
        {"name": "alice"},
        ["big"],
        id="highest-weight-wins",
    ),
    pytest.param(
        {
            "first": {"authentication": {"name": "a.*"}, "flavors": ["cpu"]},
            "second": {"authentication": {"name": "al.*"}, "flavors": ["big"]},
        },
        "hubA",
        {"name": "alice"},
        ["cpu"],
        id="equal-weight-first-written-wins",
    ),
    pytest.param(
        {
            "block": {"authentication": {"name": "alice"}, "forbidden": True, "weight": 1},
            "grant": {"authentication": {"name": "alice"}, "flavors": ["cpu"], "weight": 2},
        },
        "hubA",
        {"name": "alice"},
        ["cpu"],
        id="forbidden-loses-to-heavier-rule",
    ),
    pytest.param(
        {"either": {"authentication": {"name": "bob", "groups": ["gpu-users"]}, "flavors": ["gpu"]}},
        "hubA",
        {"name": "alice", "groups": ["gpu-users"]},
        ["gpu"],
        id="fields-are-ored-as-upstream",
    ),
    pytest.param(
        {"g": {"authentication": {"groups": ".*"}, "flavors": ["gpu"]}},
        "hubA",
        {"name": "alice"},
        ["cpu", "gpu", "big"],
        id="missing-field-does-not-match",
    ),
    pytest.param(
        {"hubB-only": {"authentication": {"name": ".*"}, "hubs": ["hubB"], "flavors": ["cpu"]}},
        "hubA",
        {"name": "alice"},
        ["cpu", "gpu", "big"],
        id="rule-limited-to-other-hub",
    ),
    pytest.param(
        {"hubA-only": {"authentication": {"name": ".*"}, "hubs": ["hubA"], "flavors": ["cpu"]}},
        "hubA",
        {"name": "alice"},
        ["cpu"],
        id="rule-limited-to-this-hub",
    ),
    pytest.param(
        {"outsiders": {"authentication": {"name": "x"}, "negate_authentication": True, "forbidden": True}},
        "hubA",
        None,
        ["cpu", "gpu", "big"],
        id="no-authentication-uses-hub-flavors",
    ),
    pytest.param(
        {"all": {"authentication": {"name": ".*"}}},
        "hubA",
        {"name": "alice"},
        ["cpu", "gpu", "big"],
        id="rule-without-flavors-means-all",
    ),
    pytest.param(
        {"none": {"authentication": {"name": ".*"}, "flavors": []}},
        "hubA",
        {"name": "alice"},
        [],
        id="empty-flavor-list",
    ),
]


@pytest.mark.parametrize(("users", "hub", "auth", "expected"), USER_CASES)
def test_user_rules(users: dict[str, Any], hub: str, auth: dict[str, Any] | None, expected: list[str]) -> None:
    assert list(allowed_flavors(policy(users=users), hub, auth)) == expected


HUBS: dict[str, Any] = {
    "default": {"jupyterhub_name": "hub.*", "flavors": ["cpu"]},
    "partners": {"jupyterhub_name": ["partner-a", "partner-b"], "flavors": ["cpu", "gpu"]},
    "glob": {"jupyterhub_name": "*-lab", "flavors": ["big"]},
    "trusted": {"jupyterhub_name": "hubtrusted", "weight": 5},
}


@pytest.mark.parametrize(
    ("hub", "expected"),
    [
        pytest.param("hubA", ["cpu"], id="regex"),
        pytest.param("partner-b", ["cpu", "gpu"], id="list-exact"),
        pytest.param("partner-c", ["cpu", "gpu", "big"], id="no-rule-matches-means-all"),
        pytest.param("ml-lab", ["big"], id="glob"),
        pytest.param("hubtrusted", ["cpu", "gpu", "big"], id="heavier-rule-without-list-means-all"),
    ],
)
def test_hub_rules(hub: str, expected: list[str]) -> None:
    assert list(allowed_flavors(policy(hubs=HUBS), hub, {"name": "alice"})) == expected


def test_user_rule_replaces_hub_choice_and_overrides_layer() -> None:
    """As upstream: a matching user rule picks from all flavors; hub overrides apply, then the user's."""
    hubs = {
        "default": {
            "jupyterhub_name": "hub.*",
            "flavors": ["gpu"],
            "flavorsOverride": {"gpu": {"max": 18, "runtime": {"hours": 1}}},
        }
    }
    users = {
        "staff": {
            "authentication": {"name": "alice"},
            "flavors": ["gpu", "big"],
            "flavorsOverride": {"gpu": {"runtime": {"hours": 4}}},
        }
    }
    p = policy(hubs=hubs, users=users)

    hub_only = allowed_flavors(p, "hubA", {"name": "bob"})
    assert list(hub_only) == ["gpu"]
    assert (hub_only["gpu"].max, runtime_seconds(hub_only["gpu"])) == (18, 3600)

    staff = allowed_flavors(p, "hubA", {"name": "alice"})
    assert list(staff) == ["gpu", "big"]
    assert (staff["gpu"].max, runtime_seconds(staff["gpu"])) == (18, 4 * 3600)
    assert staff["gpu"].max_per_user == 2  # keys not overridden keep the flavor's value
    assert staff["big"] == p.flavors["big"]


def test_normaliser_runs_before_matching_on_a_copy() -> None:
    def lower(auth: dict[str, Any]) -> dict[str, Any]:
        auth["name"] = auth["name"].lower()
        auth["groups"][:] = [group.lower() for group in auth["groups"]]
        return auth

    users = {"alice": {"authentication": {"name": "alice", "groups": ["staff"]}, "flavors": ["cpu"]}}
    auth = {"name": "ALICE", "groups": ["STAFF"]}
    assert list(allowed_flavors(policy(users=users), "hubA", auth)) == ["cpu", "gpu", "big"]

    hooked = FlavorPolicy.from_values({"flavors": FLAVORS, "users": users}, normaliser=lower)
    assert list(allowed_flavors(hooked, "hubA", auth)) == ["cpu"]
    assert auth == {"name": "ALICE", "groups": ["STAFF"]}


def test_normaliser_must_return_a_dict() -> None:
    broken = FlavorPolicy.from_values({"flavors": FLAVORS}, normaliser=lambda auth: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must return a dict"):
        allowed_flavors(broken, "hubA", {"name": "alice"})


def test_menu_shape() -> None:
    menu = flavor_menu(allowed_flavors(policy(), "hubA", None), {"gpu": 7, "other": 3})
    assert menu == {
        "cpu": {"max": -1, "weight": 1, "display_name": "2 GB, 1 CPU", "description": "Small.", "current": 0},
        "gpu": {
            "max": 10,
            "maxPerUser": 2,
            "weight": 5,
            "display_name": "gpu",
            "description": "",
            "runtime": {"hours": 2},
            "current": 7,
        },
        "big": {
            "max": 3,
            "weight": 9,
            "display_name": "big",
            "description": "",
            "runtime": {"days": 1, "minutes": 30},
            "current": 0,
        },
    }


def test_nothing_configured_allows_everything() -> None:
    p = FlavorPolicy.from_values({"sshPublicKeys": []})
    assert p.configured is False
    assert allowed_flavors(p, "hubA", {"name": "alice"}) == {}
    assert flavor_menu(allowed_flavors(p, "hubA", None), {}) == {}
    assert admission(p, "hubA", None, "anything") == Admission(FlavorLimits())
    assert admission(p, "hubA", None, None).allowed


def test_global_limit_applies_without_flavors() -> None:
    p = FlavorPolicy.from_values({"maxPerUserTotal": 2})
    assert admission(p, "hubA", None, None) == Admission(FlavorLimits(user_total_max=2))


@pytest.mark.parametrize(
    ("flavor", "refusal", "message"),
    [
        pytest.param(
            "gpux",
            Refusal.FLAVOR_NOT_ALLOWED,  # as for a flavor that exists but is not this hub's
            "You may not use flavor 'gpux'. Choose one of: cpu, gpu, big.",
            id="unknown",
        ),
        pytest.param(None, Refusal.NO_FLAVOR, "No flavor was chosen. Choose one of: cpu, gpu, big.", id="missing"),
    ],
)
def test_admission_refusals(flavor: str | None, refusal: Refusal, message: str) -> None:
    result = admission(policy(maxPerUserTotal=3), "hubA", {"name": "alice"}, flavor)
    assert (result.allowed, result.refusal, result.message) == (False, refusal, message)


def test_admission_not_allowed_for_this_user() -> None:
    p = policy(
        users={
            "guests": {"authentication": {"groups": ["guest"]}, "flavors": ["cpu"]},
            "banned": {"authentication": {"name": "mallory"}, "forbidden": True},
        }
    )
    result = admission(p, "hubA", {"name": "eve", "groups": ["guest"]}, "gpu")
    assert result.refusal is Refusal.FLAVOR_NOT_ALLOWED
    assert result.message == "You may not use flavor 'gpu'. Choose one of: cpu."
    banned = admission(p, "hubA", {"name": "mallory"}, "cpu")
    assert banned.message == "You may not use flavor 'cpu'. No flavor is available to you on this Outpost."


def test_admission_allows_and_exposes_limits_after_overrides() -> None:
    hubs = {"h": {"jupyterhub_name": "hubA", "flavorsOverride": {"gpu": {"max": 4, "maxPerUser": -1}}}}
    result = admission(policy(hubs=hubs, maxPerUserTotal=5), "hubA", None, "gpu")
    assert result.allowed and result.message == ""
    assert result.limits == FlavorLimits(flavor_max=4, per_user_max=-1, user_total_max=5)
    assert result.flavor is not None and result.flavor.resources == {"gpu": 1}
    full = counted_refusal(admission(policy(hubs=hubs), "hubA", None, "gpu"), "gpu", Refusal.FLAVOR_FULL, 4)
    assert full.refusal is Refusal.FLAVOR_FULL and "(4 of 4 in use)" in full.message
    assert full.limits == FlavorLimits(flavor_max=4, per_user_max=-1, user_total_max=-1)


def test_message_uses_display_name_and_singular() -> None:
    limits = FlavorLimits(flavor_max=1, per_user_max=1, user_total_max=1)
    assert refusal_message(Refusal.USER_FLAVOR_LIMIT, "2 GB, 1 CPU", limits, 1) == (
        "You already run 1 of the 1 server each user may run with flavor '2 GB, 1 CPU'. "
        "Stop one before starting another."
    )
    p = FlavorPolicy.from_values({"flavors": {"cpu": {"max": 1, "display_name": "2 GB, 1 CPU"}}})
    full = counted_refusal(admission(p, "hubA", None, "cpu"), "cpu", Refusal.FLAVOR_FULL, 1)
    assert full.message.startswith("Flavor '2 GB, 1 CPU' is full")
    with pytest.raises(ValueError, match="not a quota refusal"):
        refusal_message(Refusal.NO_FLAVOR, "x", limits, 0)


def test_refusal_values_match_the_store_script() -> None:
    assert {r.value for r in Refusal} >= {"flavor_full", "user_flavor_limit", "user_total_limit"}

"""Flavor rules, the `/flavors` menu and admission: table-driven, no I/O.

Whether a limit is reached is the store's create script's to decide: tests/store/test_create.py."""

from __future__ import annotations

from typing import Any

import pytest

from outpost.flavor_rules import matches
from outpost.flavors import (
    Admission,
    FlavorConfigError,
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


@pytest.mark.parametrize(
    ("matcher", "value", "expected"),
    [
        pytest.param("us..1", "user1", True, id="regex"),
        pytest.param("user", "user1", False, id="regex-is-fullmatch"),
        pytest.param(".*@mycomp.org", "a@mycomp.org", True, id="regex-suffix"),
        pytest.param("*@mycomp.org", "a@mycomp.org", True, id="glob-when-regex-invalid"),
        pytest.param("*@mycomp.org", "a@other.org", False, id="glob-no-match"),
        pytest.param("user?", "user1", True, id="glob-after-regex-fails-to-match"),
        pytest.param("a+b", "a+b", True, id="literal-text"),
        pytest.param("team[1]", "team[1]", True, id="exact-when-regex-and-glob-miss"),
        pytest.param("team[1]", "team1", True, id="regex-class"),
        pytest.param("alice", "Alice", False, id="case-sensitive"),
        pytest.param(("alice", "bob"), "bob", True, id="list-exact"),
        pytest.param(("b.b",), "bob", False, id="list-is-not-regex"),
        pytest.param("gpu-.*", ["staff", "gpu-users"], True, id="list-value-any-element"),
        pytest.param(("gpu-users",), ["staff", "gpu-users"], True, id="list-value-list-matcher"),
        pytest.param("gpu-.*", [], False, id="empty-list-value"),
        pytest.param("4.", 42, True, id="number-value"),
        pytest.param(".*", None, False, id="none-value"),
    ],
)
def test_matches(matcher: str | tuple[str, ...], value: object, expected: bool) -> None:
    assert matches(matcher, value) is expected


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


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"flavors": {"gpu": {"max": "ten"}}}, "flavors.gpu.max: must be an integer", id="int"),
        pytest.param({"flavors": {"gpu": {"max": True}}}, "flavors.gpu.max: must be an integer", id="bool-int"),
        pytest.param({"flavors": {"gpu": {"max": -2}}}, "flavors.gpu.max: must be -1 or more", id="below-1"),
        pytest.param(
            {"flavors": {"gpu": {"maxPerUser": "2"}}},
            "flavors.gpu.maxPerUser: must be an integer",
            id="alias-in-path",
        ),
        pytest.param({"flavors": {"gpu": {"maxperuser": 2}}}, "flavors.gpu.maxperuser: unknown key", id="typo"),
        pytest.param(
            {"flavors": {"gpu": {"runtime": {"hours": 0}}}},
            "flavors.gpu.runtime: must last at least one minute (days, hours or minutes)",
            id="zero-runtime",
        ),
        pytest.param(
            {"flavors": {"gpu": {"runtime": {"weeks": 1}}}},
            "flavors.gpu.runtime.weeks: unknown key",
            id="runtime-key",
        ),
        pytest.param(
            {"flavors": {"gpu": {"resources": []}}},
            "flavors.gpu.resources: must be a mapping",
            id="resources",
        ),
        pytest.param({"flavors": ["gpu"]}, "flavors: must be a mapping", id="flavors-shape"),
        pytest.param({"flavors": FLAVORS, "maxPerUserTotal": 1.5}, "maxPerUserTotal: must be an integer", id="total"),
        pytest.param(
            {"flavors": FLAVORS, "hubs": {"h": {"flavors": ["cpu"]}}},
            "hubs.h.jupyterhub_name: is required",
            id="hub-name-required",
        ),
        pytest.param(
            {"flavors": FLAVORS, "hubs": {"h": {"jupyterhub_name": 7}}},
            "hubs.h.jupyterhub_name: must be a pattern string (regex, glob or exact) or a list of exact strings",
            id="hub-name-type",
        ),
        pytest.param(
            {"flavors": FLAVORS, "users": {"u": {"authentication": {"groups": [1]}}}},
            "users.u.authentication.groups: must be a pattern string (regex, glob or exact) or a list of exact strings",
            id="pattern-list-type",
        ),
        pytest.param(
            {"flavors": FLAVORS, "users": {"u": {"forbidden": "yes"}}},
            "users.u.forbidden: must be true or false",
            id="bool",
        ),
        pytest.param(
            {"flavors": FLAVORS, "users": {"u": {"flavors": ["cpu", "gpux"]}}},
            "users.u.flavors: unknown flavor 'gpux'",
            id="unknown-flavor",
        ),
        pytest.param(
            {
                "flavors": FLAVORS,
                "hubs": {"h": {"jupyterhub_name": "h", "flavorsOverride": {"nope": {"max": 1}}}},
            },
            "hubs.h.flavorsOverride.nope: unknown flavor",
            id="override-unknown",
        ),
        pytest.param(
            {
                "flavors": FLAVORS,
                "users": {"u": {"flavors": ["cpu"], "flavorsOverride": {"gpu": {"max": 1}}}},
            },
            "users.u.flavorsOverride.gpu: not listed in users.u.flavors",
            id="override-unlisted",
        ),
        pytest.param(
            {"flavors": FLAVORS, "users": {"u": {"flavorsOverride": {"gpu": {"max": "x"}}}}},
            "users.u.flavorsOverride.gpu.max: must be an integer",
            id="override-type",
        ),
        pytest.param(
            {"users": {"u": {}}},
            "flavors: is required when users or hubs rules are configured",
            id="rules-without-flavors",
        ),
    ],
)
def test_config_errors_name_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(FlavorConfigError) as info:
        FlavorPolicy.from_values(values)
    assert str(info.value).startswith(message)


def test_helm_layout_nests_everything_under_flavors() -> None:
    rules = {"users": {"u": {"authentication": {"name": "alice"}, "flavors": ["cpu"]}}}
    flat = FlavorPolicy.from_values({"flavors": FLAVORS, **rules, "maxPerUserTotal": 3})
    nested = FlavorPolicy.from_values({"flavors": {"flavors": FLAVORS, **rules, "maxPerUserTotal": 3}})
    assert nested == flat and nested.max_per_user_total == 3


def test_config_errors_are_all_reported() -> None:
    with pytest.raises(FlavorConfigError) as info:
        FlavorPolicy.from_values({"flavors": {"a": {"max": "x"}, "b": {"weight": "y"}}})
    assert str(info.value) == "flavors.a.max: must be an integer; flavors.b.weight: must be an integer"


def test_values_parse_and_other_keys_are_ignored() -> None:
    p = FlavorPolicy.from_values({"flavors": FLAVORS, "maxPerUserTotal": 4, "sshPublicKeys": [], "users": None})
    assert p.configured and p.max_per_user_total == 4 and p.users == {}
    assert p.flavors["gpu"].resources == {"gpu": 1}
    assert runtime_seconds(p.flavors["big"]) == 24 * 3600 + 30 * 60
    assert runtime_seconds(p.flavors["cpu"]) is None


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

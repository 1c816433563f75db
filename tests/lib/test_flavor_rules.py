"""Flavor rules as configured: how a rule's matcher compares names and groups, and how the values
parse, with each mistake named by its key."""

from __future__ import annotations

from typing import Any

import pytest

from outpost.flavor_rules import FlavorConfigError, FlavorPolicy, matches
from outpost.flavors import runtime_seconds
from tests.lib.test_flavors import FLAVORS


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

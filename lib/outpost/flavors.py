"""Which flavors a hub's user may start, the `/flavors` menu, the limits a start is counted against, and the
messages of refusals.

Pure: the configuration and matching live in `outpost.flavor_rules`; counting, and the decision whether a
limit is reached, live in the store's create script (`outpost.store.keys.CREATE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from outpost.flavor_rules import (
    Flavor,
    FlavorConfigError,
    FlavorPolicy,
    Normaliser,
    best_rule,
    matches,
    normalised,
    select_flavors,
    user_rule_matches,
)

__all__ = [
    "Admission",
    "Flavor",
    "FlavorConfigError",
    "FlavorPolicy",
    "FlavorLimits",
    "Normaliser",
    "Refusal",
    "admission",
    "allowed_flavors",
    "counted_refusal",
    "flavor_menu",
    "refusal_message",
    "runtime_seconds",
]


@dataclass(frozen=True)
class FlavorLimits:
    """What the store's create script enforces when it counts a start; -1 means unlimited."""

    flavor_max: int = -1
    per_user_max: int = -1
    user_total_max: int = -1


class Refusal(StrEnum):
    # The quota values are the ones the store's counting script answers with.
    NO_FLAVOR = "no_flavor"  # none chosen (a name that is not this hub's: FLAVOR_NOT_ALLOWED)
    FLAVOR_NOT_ALLOWED = "flavor_not_allowed"
    USER_FLAVOR_LIMIT = "user_flavor_limit"
    FLAVOR_FULL = "flavor_full"
    USER_TOTAL_LIMIT = "user_total_limit"


@dataclass(frozen=True)
class Admission:
    limits: FlavorLimits
    flavor: Flavor | None = None  # the effective flavor (overrides applied); None without flavors
    refusal: Refusal | None = None
    message: str = ""  # for the user; empty when allowed

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def allowed_flavors(policy: FlavorPolicy, hub: str, authentication: Mapping[str, Any] | None) -> dict[str, Flavor]:
    """The flavors this hub's user may start, overrides applied; empty when nothing is configured.

    As upstream: the best matching `hubs` rule picks the hub's flavors (no match: all). With an
    authentication dict, the best matching `users` rule replaces that choice (from all flavors),
    or blocks everything when `forbidden`; the hub rule's overrides apply before the user rule's.
    """
    if not policy.configured:
        return {}
    hub_rule = best_rule(r for r in policy.hubs.values() if matches(r.jupyterhub_name, hub))
    auth = normalised(policy.normaliser, authentication)
    user_rule = None
    if auth:
        user_rule = best_rule(r for r in policy.users.values() if user_rule_matches(r, hub, auth))
    if user_rule is None:
        return select_flavors(policy.flavors, hub_rule, [hub_rule])
    if user_rule.forbidden:
        return {}
    return select_flavors(policy.flavors, user_rule, [hub_rule, user_rule])


def flavor_menu(allowed: Mapping[str, Flavor], counts: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """The protocol's `/flavors` answer; `counts` holds the running servers per flavor."""
    menu: dict[str, dict[str, Any]] = {}
    for name, flavor in allowed.items():
        entry: dict[str, Any] = {"max": flavor.max}
        if flavor.max_per_user is not None:
            entry["maxPerUser"] = flavor.max_per_user
        entry |= {
            "weight": flavor.weight,
            "display_name": flavor.display_name or name,
            "description": flavor.description,
        }
        if flavor.runtime is not None:
            entry["runtime"] = flavor.runtime.model_dump(exclude_defaults=True)
        entry["current"] = counts.get(name, 0)
        menu[name] = entry
    return menu


def runtime_seconds(flavor: Flavor) -> int | None:
    """How long a server of this flavor may run, or None for no limit."""
    return None if flavor.runtime is None else flavor.runtime.seconds


def _servers(n: int) -> str:
    return "server" if n == 1 else "servers"


def refusal_message(refusal: Refusal, label: str, limits: FlavorLimits, count: int) -> str:
    """The sentence for a quota refusal: `count` servers reached the limit the store's create script names."""
    if refusal is Refusal.FLAVOR_FULL:
        return (
            f"Flavor '{label}' is full ({count} of {limits.flavor_max} in use). "
            "Try again later or choose another flavor."
        )
    if refusal is Refusal.USER_FLAVOR_LIMIT:
        return (
            f"You already run {count} of the {limits.per_user_max} {_servers(limits.per_user_max)} "
            f"each user may run with flavor '{label}'. Stop one before starting another."
        )
    if refusal is Refusal.USER_TOTAL_LIMIT:
        return (
            f"You already run {count} of the {limits.user_total_max} {_servers(limits.user_total_max)} "
            "each user may run on this Outpost. Stop one before starting another."
        )
    raise ValueError(f"{refusal} is not a quota refusal")


def _choices(allowed: Mapping[str, Flavor]) -> str:
    if not allowed:
        return "No flavor is available to you on this Outpost."
    return "Choose one of: " + ", ".join(allowed) + "."


def admission(
    policy: FlavorPolicy, hub: str, authentication: Mapping[str, Any] | None, flavor_name: str | None
) -> Admission:
    """May this user start this flavor at all, and against which limits? Whether a limit is reached is the
    store's to decide, with the counts of the moment it counts (`counted_refusal` words its answer)."""
    total = policy.max_per_user_total
    if not policy.configured:
        return Admission(FlavorLimits(user_total_max=total))

    allowed = allowed_flavors(policy, hub, authentication)
    if flavor_name is None:
        return Admission(
            FlavorLimits(), refusal=Refusal.NO_FLAVOR, message=f"No flavor was chosen. {_choices(allowed)}"
        )
    flavor = allowed.get(flavor_name)
    if flavor is None:
        # One answer whether the flavor is missing or another hub's: a hub learns only its own menu.
        message = f"You may not use flavor '{flavor_name}'. {_choices(allowed)}"
        return Admission(FlavorLimits(), refusal=Refusal.FLAVOR_NOT_ALLOWED, message=message)

    per_user = -1 if flavor.max_per_user is None else flavor.max_per_user
    return Admission(FlavorLimits(flavor_max=flavor.max, per_user_max=per_user, user_total_max=total), flavor)


def counted_refusal(decision: Admission, flavor_name: str, verdict: Refusal, count: int) -> Admission:
    """The admission refused by the store's count: `verdict` is the limit its create script found reached
    (checked in upstream's order: the user's in the flavor, the flavor's, the user's in total)."""
    label = decision.flavor.display_name if decision.flavor and decision.flavor.display_name else flavor_name
    message = refusal_message(verdict, label, decision.limits, count)
    return Admission(decision.limits, decision.flavor, verdict, message)

"""Credits for the JupyterHub Credit Service (upstream 2.1): what a hub, and one of its users, may spend.

Configured like flavors (the Helm values' `credits:` or upstream's `OUTPOST_CREDITS_PATH` file): a
`credits` map of name -> values (answered as written), `hubs` sets and `users` sets matched with the
flavor rules' machinery. Pure; the routes live in `outpost.routes.handlers`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, StrictStr, ValidationError

from outpost.flavor_rules import (
    HubMatch,
    Normaliser,
    RuleModel,
    UserMatch,
    best_rule,
    describe_error,
    matches,
    normalised,
    unknown_references,
    user_rule_matches,
)

__all__ = ["FORBIDDEN", "CreditConfigError", "CreditPolicy", "hub_credits", "user_credits"]

# A forbidden user's answer, exactly as upstream gives it: flat, not keyed by credit name.
FORBIDDEN: dict[str, int] = {"cap": 0, "grant_value": 0, "grant_interval": 86400}

Credits = dict[str, dict[str, Any]]


class CreditConfigError(ValueError):
    """The credits configuration is invalid; the message names each bad key path."""


class _CreditRule(RuleModel):
    credits: list[StrictStr] | None = None  # None: every credit
    # Credit name -> keys whose values replace the configured ones (key by key, not deep).
    credits_override: dict[str, dict[str, Any]] = Field(default_factory=dict, alias="creditsOverride")


class CreditHubRule(_CreditRule, HubMatch):
    pass


class CreditUserRule(_CreditRule, UserMatch):
    pass


class CreditPolicy(RuleModel):
    credits: dict[str, dict[str, Any]] = Field(default_factory=dict)
    hubs: dict[str, CreditHubRule] = Field(default_factory=dict)
    users: dict[str, CreditUserRule] = Field(default_factory=dict)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> CreditPolicy:
        """Read `credits`, `hubs` and `users` (upstream's credits file, or the values' `credits:`)."""
        try:
            policy = cls.model_validate({key: value for key, value in values.items() if value is not None})
        except ValidationError as exc:
            described = (f"credits.{describe_error(error)}" for error in exc.errors())
            raise CreditConfigError("; ".join(described)) from None
        problems = list(_reference_problems(policy))
        if problems:
            raise CreditConfigError("; ".join(problems))
        return policy


def _reference_problems(policy: CreditPolicy) -> Iterable[str]:
    rules: list[tuple[str, _CreditRule]] = [(f"credits.users.{k}", r) for k, r in policy.users.items()]
    rules += [(f"credits.hubs.{k}", r) for k, r in policy.hubs.items()]
    yield from unknown_references(
        ((path, rule.credits, rule.credits_override) for path, rule in rules), policy.credits, "credit"
    )


def _select(credits: Credits, rule: _CreditRule | None, overrides: Iterable[_CreditRule | None]) -> Credits:
    """The credits `rule` lists (all without a rule or list), then each rule's overrides in order."""
    names = None if rule is None else rule.credits
    chosen = {name: copy.deepcopy(values) for name, values in credits.items() if names is None or name in names}
    for source in overrides:
        for name, patch in (source.credits_override if source else {}).items():
            if name in chosen:
                chosen[name] |= copy.deepcopy(patch)
    return chosen


def _hub_rule(policy: CreditPolicy, hub: str) -> CreditHubRule | None:
    return best_rule(rule for rule in policy.hubs.values() if matches(rule.jupyterhub_name, hub))


def hub_credits(policy: CreditPolicy, hub: str) -> Credits:
    """`GET /credits/`: the best matching hub set's credits, with its overrides; no match: all."""
    rule = _hub_rule(policy, hub)
    return _select(policy.credits, rule, [rule])


def user_credits(
    policy: CreditPolicy, hub: str, authentication: Mapping[str, Any], normaliser: Normaliser | None = None
) -> Credits | dict[str, int]:
    """`POST /usercredits`: as for flavors, the best matching user set picks from all credits (hub
    set's overrides, then its own), `forbidden` gives upstream's zero answer, no match the hub's."""
    hub_rule = _hub_rule(policy, hub)
    auth = normalised(normaliser, authentication)
    user_rule = best_rule(r for r in policy.users.values() if user_rule_matches(r, hub, auth)) if auth else None
    if user_rule is None:
        return _select(policy.credits, hub_rule, [hub_rule])
    if user_rule.forbidden:
        return dict(FORBIDDEN)
    return _select(policy.credits, user_rule, [hub_rule, user_rule])

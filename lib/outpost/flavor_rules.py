"""Flavor configuration (the Helm values `flavors`, `users`, `hubs`, `maxPerUserTotal`) and rule matching.

Pure: frozen pydantic models, validated once at start-up; `outpost.flavors` makes the decisions.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from outpost.suggest import unknown_key

__all__ = [
    "Flavor",
    "FlavorConfigError",
    "FlavorPatch",
    "FlavorPolicy",
    "HubMatch",
    "HubRule",
    "Normaliser",
    "RuleModel",
    "RuntimeLimit",
    "UserMatch",
    "UserRule",
    "best_rule",
    "describe_error",
    "matches",
    "normalised",
    "select_flavors",
    "unknown_references",
    "user_rule_matches",
]

# The administrator's hook from outpost_config.py, e.g. lower-casing `name` before matching.
Normaliser = Callable[[dict[str, Any]], dict[str, Any]]


class FlavorConfigError(ValueError):
    """The flavor configuration is invalid; the message names each bad key path."""


def _matcher(value: object) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("must be a pattern string (regex, glob or exact) or a list of exact strings")


# A string is tried as regex, then glob, then exact value; a list holds exact values.
Matcher = Annotated[str | tuple[str, ...], PlainValidator(_matcher)]
Limit = Annotated[StrictInt, Field(ge=-1)]  # -1 means unlimited
Amount = Annotated[StrictInt, Field(ge=0)]


class RuleModel(BaseModel):
    """Configuration read once and never changed; unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


class RuntimeLimit(RuleModel):
    """How long a server of this flavor may run before the Outpost stops it."""

    days: Amount = 0
    hours: Amount = 0
    minutes: Amount = 0

    @model_validator(mode="after")
    def _not_zero(self) -> RuntimeLimit:
        if self.seconds == 0:
            raise ValueError("must last at least one minute (days, hours or minutes)")
        return self

    @property
    def seconds(self) -> int:
        return ((self.days * 24 + self.hours) * 60 + self.minutes) * 60


class Flavor(RuleModel):
    display_name: StrictStr | None = None  # None: the hub shows the flavor's name
    description: StrictStr = ""
    weight: StrictInt = 0
    max: Limit = -1  # servers of this flavor at once, all hubs and users together
    max_per_user: Limit | None = Field(default=None, alias="maxPerUser")
    runtime: RuntimeLimit | None = None
    resources: dict[str, Any] = Field(default_factory=dict)  # handed to the backend as is


class FlavorPatch(Flavor):
    """A rule's `flavorsOverride` entry: only the keys written in the configuration apply."""

    def apply(self, flavor: Flavor) -> Flavor:
        return flavor.model_copy(update={key: getattr(self, key) for key in self.model_fields_set})


class _Weighted(RuleModel):
    weight: StrictInt = 0


class HubMatch(_Weighted):
    """Which hubs a `hubs` set is for (flavors and credits alike)."""

    jupyterhub_name: Matcher  # the hub's credential name


class UserMatch(_Weighted):
    """Which users a `users` set is for (flavors and credits alike)."""

    authentication: dict[str, Matcher] = Field(default_factory=dict)
    negate_authentication: StrictBool = False
    forbidden: StrictBool = False
    hubs: list[StrictStr] | None = None  # None: the rule applies to users of every hub


class _Rule(_Weighted):
    flavors: list[StrictStr] | None = None  # None: every flavor
    flavors_override: dict[str, FlavorPatch] = Field(default_factory=dict, alias="flavorsOverride")


class HubRule(_Rule, HubMatch):
    pass


class UserRule(_Rule, UserMatch):
    pass


class FlavorPolicy(RuleModel):
    flavors: dict[str, Flavor] = Field(default_factory=dict)
    users: dict[str, UserRule] = Field(default_factory=dict)
    hubs: dict[str, HubRule] = Field(default_factory=dict)
    # Ours, not upstream's: servers one user of one hub may run across all flavors (upstream has
    # the Python setting `global_max_per_user` instead). -1 means unlimited.
    max_per_user_total: Limit = Field(default=-1, alias="maxPerUserTotal")
    normaliser: Normaliser | None = Field(default=None, exclude=True)

    @property
    def configured(self) -> bool:
        """False when no flavor is defined: then every start is allowed and `/flavors` is empty."""
        return bool(self.flavors)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], normaliser: Normaliser | None = None) -> FlavorPolicy:
        """Read the flavor keys from the whole Helm values mapping; raise `FlavorConfigError`."""
        keys = ("flavors", "users", "hubs", "maxPerUserTotal")
        grouped = values.get("flavors")
        if isinstance(grouped, Mapping) and isinstance(grouped.get("flavors"), Mapping):
            # The Helm values group all four under `flavors:` (`flavors.flavors.<name>`);
            # the upstream flavors file keeps them side by side. Both read the same.
            values = {**values, **grouped}
            # A key beside them (a rule indented one level too little, a typo) would be dropped unseen.
            strays = [
                f"flavors.{key}: {unknown_key(cls, [], str(key))} (beside flavors: only users, hubs, maxPerUserTotal)"
                for key in grouped
                if key not in keys
            ]
            if strays:
                raise FlavorConfigError("; ".join(strays))
        data: dict[str, Any] = {key: values[key] for key in keys if values.get(key) is not None}
        try:
            policy = cls.model_validate({**data, "normaliser": normaliser})
        except ValidationError as exc:
            problems = [describe_error(error) for error in exc.errors()]
            flavors = data.get("flavors")
            for key in ("users", "hubs"):  # `users:` indented under `flavors:` reads as a flavor named users
                if isinstance(flavors, Mapping) and key in flavors:
                    problems.append(f"flavors.{key}: is `{key}:` indented under `flavors:` by mistake?")
            raise FlavorConfigError("; ".join(problems)) from None
        problems = list(_reference_problems(policy))
        if problems:
            raise FlavorConfigError("; ".join(problems))
        return policy


_PHRASES = {
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "list_type": "must be a list",
    "missing": "is required",
}


def describe_error(error: Mapping[str, Any]) -> str:
    path = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        phrase = unknown_key(FlavorPolicy, error["loc"][:-1], str(error["loc"][-1]))
    elif kind == "greater_than_equal":
        phrase = f"must be {error['ctx']['ge']} or more"
    elif kind == "value_error":
        phrase = str(error["ctx"]["error"])
    else:
        phrase = _PHRASES.get(kind, str(error["msg"]))
    return f"{path}: {phrase}"


def _reference_problems(policy: FlavorPolicy) -> Iterable[str]:
    if (policy.users or policy.hubs) and not policy.flavors:
        yield "flavors: is required when users or hubs rules are configured"
    rules: list[tuple[str, _Rule]] = [(f"users.{k}", r) for k, r in policy.users.items()]
    rules += [(f"hubs.{k}", r) for k, r in policy.hubs.items()]
    yield from unknown_references(
        ((path, rule.flavors, rule.flavors_override) for path, rule in rules), policy.flavors, "flavor"
    )


def unknown_references(
    rules: Iterable[tuple[str, Sequence[str] | None, Iterable[str]]], known: Container[str], noun: str
) -> Iterator[str]:
    """What rules name (in their `<noun>s` list and `<noun>sOverride`) that is not configured."""
    for path, listed, overridden in rules:
        for name in listed or ():
            if name not in known:
                yield f"{path}.{noun}s: unknown {noun} '{name}'"
        for name in overridden:
            if name not in known:
                yield f"{path}.{noun}sOverride.{name}: unknown {noun}"
            elif listed is not None and name not in listed:
                yield f"{path}.{noun}sOverride.{name}: not listed in {path}.{noun}s"


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> tuple[re.Pattern[str] | None, re.Pattern[str]]:
    try:
        regex: re.Pattern[str] | None = re.compile(pattern)
    except re.error:
        regex = None
    return regex, re.compile(fnmatch.translate(pattern))


def matches(matcher: str | tuple[str, ...], value: object) -> bool:
    """Does `value`, or any element of a list value (e.g. groups), satisfy the matcher?"""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(matcher, tuple):
            if item in matcher:
                return True
        elif isinstance(item, str | int | float):
            text = str(item)
            regex, glob = _compiled(matcher)
            if (regex is not None and regex.fullmatch(text)) or glob.fullmatch(text) or text == matcher:
                return True
    return False


def normalised(normaliser: Normaliser | None, authentication: Mapping[str, Any] | None) -> dict[str, Any]:
    """The authentication dict rules match: the administrator's normaliser applied to a copy."""
    auth = dict(authentication or {})
    if normaliser is None or not auth:
        return auth
    result = normaliser(copy.deepcopy(auth))
    if not isinstance(result, dict):
        raise TypeError("the authentication normaliser must return a dict")
    return result


def user_rule_matches(rule: UserMatch, hub: str, authentication: Mapping[str, Any]) -> bool:
    # As upstream: one matching field is enough (fields are OR-ed), then negation flips the result.
    if rule.hubs is not None and hub not in rule.hubs:
        return False
    matched = any(
        key in authentication and matches(matcher, authentication[key]) for key, matcher in rule.authentication.items()
    )
    return matched != rule.negate_authentication


R = TypeVar("R", bound=_Weighted)


def best_rule(rules: Iterable[R]) -> R | None:
    """The highest weight wins; among equal weights, the rule written first."""
    return max(rules, key=lambda rule: rule.weight, default=None)


def select_flavors(
    flavors: Mapping[str, Flavor], rule: _Rule | None, overrides: Iterable[_Rule | None] = ()
) -> dict[str, Flavor]:
    """The flavors `rule` lists (all without a rule or list), then each rule's overrides in order."""
    names = None if rule is None else rule.flavors
    chosen = {name: flavor for name, flavor in flavors.items() if names is None or name in names}
    for source in overrides:
        for name, patch in (source.flavors_override if source else {}).items():
            if name in chosen:
                chosen[name] = patch.apply(chosen[name])
    return chosen

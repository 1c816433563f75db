"""Which `misc` overrides of backend options a hub may send: per hub all / none / an allow-list,
narrowed further by the administrator's `c.Outpost.allow_override` hook; and every string in them
is data, never a format expression (backends and spawners fill templates with `str.format`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from outpost import names

AllowOverride = Callable[[str, str, Any], bool]
# Passed to the server as they are, never filled in: and whoever may set them runs code anyway.
VERBATIM = frozenset({"cmd", "args", "env", "environment"})
# Placeholders in all of one start's `misc`: what filling them in may allocate stays bounded.
FIELDS_PER_START_MAX = 64


def refused_overrides(
    hub: str, misc: Mapping[str, Any], allowed: str | list[str], hook: AllowOverride | None
) -> list[str]:
    """The keys of `misc` this hub may not override, sorted; empty means the start may go ahead."""
    refused = set()
    for key, value in misc.items():
        by_setting = allowed == "all" or (isinstance(allowed, list) and key in allowed)
        if not by_setting or (hook is not None and not hook(hub, key, value)):
            refused.add(key)
    return sorted(refused)


def _strings(value: Any) -> Iterator[str]:
    """Every string a spawner may fill in: values of dicts and items of lists, at any depth (a loop,
    not recursion: JSON nests deeper than the interpreter's recursion limit leaves room for)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def refused_templates(misc: Mapping[str, Any]) -> list[str]:
    """The keys of `misc` holding a string that is not text with plain `{field}` placeholders, sorted."""
    refused = set()
    fields = 0
    for key, value in misc.items():
        if key in VERBATIM:
            continue
        for text in _strings(value):
            if "{" not in text and "}" not in text:
                continue
            try:
                fields += len(names.template_fields_used(text))
            except ValueError:
                refused.add(key)
            if fields > FIELDS_PER_START_MAX:
                refused.add(key)
    return sorted(refused)

"""Which `misc` overrides of backend options a hub may send: per hub all / none / an allow-list,
narrowed further by the administrator's `c.Outpost.allow_override` hook."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

AllowOverride = Callable[[str, str, Any], bool]


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

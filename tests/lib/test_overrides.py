"""A hub's `misc`: the per-hub policy, and strings that are data wherever a spawner may fill them in."""

from __future__ import annotations

from typing import Any

import pytest

from outpost.overrides import FIELDS_PER_START_MAX, refused_overrides, refused_templates
from outpost.settings import DEFAULT_OVERRIDES, HubOptions


def test_the_default_policy_is_the_outpostspawners_list() -> None:
    assert HubOptions().allowed_overrides == list(DEFAULT_OVERRIDES)
    misc = {key: None for key in (*DEFAULT_OVERRIDES, "cmd", "args", "env", "notebook_dir", "image")}
    refused = refused_overrides("hubA", misc, HubOptions().allowed_overrides, None)
    assert refused == ["args", "cmd", "env", "image", "notebook_dir"]
    assert refused_overrides("hubA", misc, "all", None) == []
    assert refused_overrides("hubA", misc, "all", lambda hub, key, value: key != "cmd") == ["cmd"]


@pytest.mark.parametrize(
    "misc",
    [
        {"pod_name_template": "{username.__class__}"},
        {"dns_name_template": "{name:>999999999}"},
        {"extra_labels": {"team": "{username!r}"}},  # KubeSpawner fills in label values
        {"volumes": [{"name": "home", "hostPath": {"path": "/home/{username[0]}"}}]},
        {"notebook_dir": "{"},  # JupyterHub's Spawner.format_string fills it in
        {"extra_labels": {f"l{i}": "{username}" * 16 for i in range(FIELDS_PER_START_MAX // 16 + 1)}},
    ],
)
def test_strings_with_format_expressions_are_refused(misc: dict[str, Any]) -> None:
    assert refused_templates({**misc, "port": 8888}) == sorted(misc)


def test_plain_templates_and_what_is_passed_verbatim_are_accepted() -> None:
    misc = {
        "pod_name_template": "jupyter-{username}--{servername}", "dns_name_template": "{name}.{namespace}.svc",
        "extra_labels": {"team": "a", "user": "{username}"}, "port": 8888, "ip": "0.0.0.0", "internal_ssl": False,
        # Passed to the server as they are; a hub allowed to set them runs commands anyway.
        "cmd": ["python", "-c", "print({'a': 1}['a'])"], "args": ["--x={0!r}"], "env": {"J": "{"},
    }  # fmt: skip
    assert refused_templates(misc) == []


def test_nesting_deeper_than_the_recursion_limit_is_fine() -> None:
    deep: Any = "{username.__class__}"
    for _ in range(5000):
        deep = [deep]
    assert refused_templates({"volumes": deep}) == ["volumes"]

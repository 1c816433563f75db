"""`c.Outpost.*` hooks from `outpost_config.py`: read from a traitlets Config as JupyterHub reads its
own, unset by default, and the start answer rewritten only by a configured hook."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from outpost.hooks import Outpost, load_hooks, sanitized


def test_nothing_configured_means_no_hooks() -> None:
    hooks = load_hooks(Config())
    assert (hooks.normalise_authentication, hooks.allow_override, hooks.sanitize_start_response) == (None, None, None)
    assert hooks.spawner_class is None
    assert sanitized(hooks, "hubA", "srv", "http://10.0.0.5:8888") == "http://10.0.0.5:8888"


def test_hooks_come_from_the_config_file_section() -> None:
    config = Config()
    config.Outpost.allow_override = lambda hub, key, value: key == "image"
    config.Outpost.spawner_class = "kubespawner.KubeSpawner"
    hooks = load_hooks(config)
    assert hooks.allow_override is not None and hooks.allow_override("hubA", "image", "x")
    assert not hooks.allow_override("hubA", "port", 1)
    assert hooks.spawner_class == "kubespawner.KubeSpawner"


def test_the_start_answer_is_rewritten_by_the_hook_and_always_a_string() -> None:
    config = Config()
    config.Outpost.sanitize_start_response = lambda hub, name, address: address.replace("svc", f"{hub}.{name}")
    assert sanitized(load_hooks(config), "hubA", "srv", "http://svc:8888") == "http://hubA.srv:8888"
    config.Outpost.sanitize_start_response = lambda hub, name, address: 8888
    assert sanitized(load_hooks(config), "hubA", "srv", "http://svc:8888") == "8888"


def test_a_hook_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TraitError):
        Outpost(config=Config({"Outpost": {"allow_override": "yes"}}))

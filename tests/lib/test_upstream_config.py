"""Upstream's `c.JupyterHubOutpost.*` settings and hooks, each mapped by itself: plain values or
(async) callables, hooks that work on copies, and failing hooks that fail closed (or open, where that
is harmless) without their message in the log.

tests/functions/test_upstream_config.py runs the same file through the API with the local backend."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from traitlets.config import Config

from outpost.errors import ConfigurationError, InvalidBody
from outpost.flavor_rules import FlavorPolicy
from outpost.upstream_config import (
    JupyterHubOutpost,
    allows_override,
    chooses_spawner,
    flavors_update_token,
    load_upstream,
    sends_events,
    user_authentication,
    with_global_max,
)

on_loop = pytest.mark.asyncio(loop_scope="session")


def upstream(**traits: Any) -> JupyterHubOutpost:
    config = Config()
    for name, value in traits.items():
        setattr(config.JupyterHubOutpost, name, value)
    return load_upstream(config)


async def async_true(*args: Any) -> bool:
    return True


def fails(*args: Any) -> Any:
    raise ValueError(f"cannot use {args}")


@on_loop
@pytest.mark.parametrize(
    ("setting", "misc", "allowed"),
    [
        pytest.param(True, {"image": "x"}, True, id="default-allows"),
        pytest.param(False, {"image": "x"}, False, id="false-refuses"),
        pytest.param(False, {}, True, id="nothing-to-override"),
        pytest.param(lambda hub, misc: "image" not in misc, {"image": "x"}, False, id="hook-refuses"),
        pytest.param(lambda hub, misc: hub == "hubA", {"port": 1}, True, id="hook-gets-the-hub"),
        pytest.param(async_true, {"port": 1}, True, id="coroutine-hook"),
        pytest.param(fails, {"image": "s3cret"}, False, id="failing-hook-refuses"),
    ],
)
async def test_allow_override(setting: Any, misc: dict[str, Any], allowed: bool) -> None:
    assert await allows_override(upstream(allow_override=setting), "hubA", misc) is allowed


@on_loop
async def test_hooks_get_copies_of_what_the_hub_sent() -> None:
    def meddle(hub: str, misc: dict[str, Any]) -> bool:
        misc["image"]["tag"] = "changed"
        return True

    misc = {"image": {"tag": "v1"}}
    assert await allows_override(upstream(allow_override=meddle), "hubA", misc)
    assert misc == {"image": {"tag": "v1"}}

    def lower(auth: dict[str, Any]) -> dict[str, Any]:
        auth["groups"].append("added")
        return {**auth, "name": auth["name"].lower()}

    auth = {"name": "ALICE", "groups": ["staff"]}
    assert await user_authentication(upstream(update_user_authentication=lower), auth) == {
        "name": "alice", "groups": ["staff", "added"],
    }  # fmt: skip
    assert auth == {"name": "ALICE", "groups": ["staff"]}


@on_loop
async def test_user_authentication_without_a_hook_or_without_authentication() -> None:
    assert await user_authentication(upstream(), {"name": "a"}) == {"name": "a"}
    assert await user_authentication(upstream(update_user_authentication=fails), None) == {}


@on_loop
async def test_a_failing_authentication_hook_refuses_the_body_without_its_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO), pytest.raises(InvalidBody) as caught:
        await user_authentication(upstream(update_user_authentication=fails), {"token": "s3cret"})
    assert "update_user_authentication refused this authentication (ValueError)" in caught.value.message
    assert "s3cret" not in caught.value.message and "s3cret" not in caplog.text
    assert "update_user_authentication raised ValueError at test_upstream_config.py:" in caplog.text


@on_loop
async def test_an_authentication_hook_must_return_a_dict() -> None:
    with pytest.raises(ConfigurationError, match="must return a dict"):
        await user_authentication(upstream(update_user_authentication=lambda auth: None), {"name": "a"})


@on_loop
@pytest.mark.parametrize(
    ("setting", "sent"),
    [(True, True), (False, False), (lambda hub: hub != "hubA", False), (async_true, True), (fails, True)],
    ids=["true", "false", "per-hub", "coroutine", "failing-hook-keeps-events-on"],
)
async def test_send_events(setting: Any, sent: bool) -> None:
    assert await sends_events(upstream(send_events=setting), "hubA") is sent


@on_loop
@pytest.mark.parametrize(
    ("setting", "token"),
    [("", ""), ("t0ken", "t0ken"), (lambda hub: f"{hub}-token", "hubA-token"), (lambda hub: None, ""), (fails, "")],
    ids=["none", "plain", "per-hub", "hook-says-none", "failing-hook-sends-no-update"],
)
async def test_flavors_update_token(setting: Any, token: str) -> None:
    assert await flavors_update_token(upstream(flavors_update_token=setting), "hubA") == token


@pytest.mark.parametrize(
    ("ours", "global_max", "total"),
    [(-1, 3, 3), (-1, -1, -1), (5, 3, 5), (0, 3, 0)],
    ids=["upstream-fills-in", "neither", "ours-wins", "ours-zero-wins"],
)
def test_global_max_per_user_is_used_only_when_the_values_set_none(ours: int, global_max: int, total: int) -> None:
    policy = FlavorPolicy.from_values({"flavors": {"small": {"max": 1}}, "maxPerUserTotal": ours})
    assert with_global_max(policy, upstream(global_max_per_user=global_max)).max_per_user_total == total


def test_a_spawner_class_chooses_the_spawner_backend(caplog: pytest.LogCaptureFixture) -> None:
    assert not chooses_spawner(upstream(), "local")
    with caplog.at_level(logging.WARNING):
        assert chooses_spawner(upstream(spawner_class="kubespawner.KubeSpawner"), "spawner")
        assert "spawner_class is set" not in caplog.text
        assert chooses_spawner(upstream(spawner_class="kubespawner.KubeSpawner"), "local")
    assert "the spawner backend runs, not 'local'" in caplog.text


@pytest.mark.parametrize(
    ("traits", "warning"),
    [
        ({"poll_requires_state": True}, "c.JupyterHubOutpost.poll_requires_state has no effect on this outpost"),
        ({"request_kwargs": {"proxy_host": "p"}}, "request_kwargs['proxy_host'] has no effect on this outpost"),
    ],
)
def test_settings_without_meaning_here_are_warned_about(
    traits: dict[str, Any], warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        load_upstream(Config({"JupyterHubOutpost": traits}))
    assert warning in caplog.text


def test_nothing_is_warned_about_for_the_meaningful_settings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        upstream(request_kwargs={"validate_cert": False, "request_timeout": 5}, send_events=False)
    assert caplog.text == ""


def test_extra_log_handlers_are_attached_once_with_upstreams_format() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    root = logging.getLogger()
    try:

        def make() -> JupyterHubOutpost:
            return upstream(
                extra_log_handlers=[handler], log_format="%(color)s[%(levelname)s]%(end_color)s %(message)s"
            )

        make()
        make()  # a second load (another request's runtime) does not attach it again
        assert root.handlers.count(handler) == 1
        logging.getLogger("outpost.test").warning("hello")
        assert records == ["[WARNING] hello"]  # upstream's colour fields print as nothing
    finally:
        root.removeHandler(handler)

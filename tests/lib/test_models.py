"""The start body as the OutpostSpawner sends it, the phases, service ids as logs show them, and a
record's `GET /services` entry. tests/fuzz/test_parsers.py checks that no body raises anything but a
validation error; these are the particular answers."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from outpost.models import (
    ACTIVE_PHASES,
    MAX_NAME_LENGTH,
    TERMINAL_PHASES,
    Phase,
    ServiceId,
    ServiceMeta,
    StartRequest,
)
from tests.conftest import start_body


def test_a_spawners_body_parses_with_its_defaults() -> None:
    request = StartRequest.model_validate(start_body(name="srv", start_id="7", user="alice"))
    assert (request.name, request.start_id, request.user) == ("srv", "7", "alice")
    bare = StartRequest.model_validate({"name": ""})
    assert (bare.start_id, bare.flavor, bare.user, bare.env, bare.misc, bare.authentication) == (
        "0", None, "", {}, {}, None,
    )  # fmt: skip


def test_unknown_fields_are_ignored_and_the_request_is_frozen() -> None:
    request = StartRequest.model_validate({"name": "srv", "from_a_newer_spawner": 1})
    assert "from_a_newer_spawner" not in request.model_dump()
    with pytest.raises(ValidationError):
        request.name = "other"  # type: ignore[misc]


def test_scalars_in_env_become_strings_but_structures_are_refused() -> None:
    request = StartRequest.model_validate({"name": "s", "env": {"PORT": 8888, "DEBUG": True, "RATIO": 0.5}})
    assert request.env == {"PORT": "8888", "DEBUG": "True", "RATIO": "0.5"}
    with pytest.raises(ValidationError):
        StartRequest.model_validate({"name": "s", "env": {"NESTED": {"a": 1}}})
    with pytest.raises(ValidationError):
        StartRequest.model_validate({"name": 5})  # the name itself stays strict


@pytest.mark.parametrize("name", ["a/b", "..", ".", "tab\there", "new\nline", "x" * (MAX_NAME_LENGTH + 1)])
def test_names_that_cannot_be_a_path_part_or_a_log_token_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        StartRequest.model_validate({"name": name})


@pytest.mark.parametrize("name", ["", "srv", "my server", "ünïcode", "x" * MAX_NAME_LENGTH])
def test_printable_names_are_kept(name: str) -> None:
    assert StartRequest.model_validate({"name": name}).name == name


@pytest.mark.parametrize(
    ("start_id", "kept"),
    [("42", "42"), (42, "42"), (0, "0"), ("a.b-c", "a.b-c"), ("x" * MAX_NAME_LENGTH, "x" * MAX_NAME_LENGTH)],
)
def test_a_start_id_is_a_string_or_an_integer(start_id: Any, kept: str) -> None:
    assert StartRequest.model_validate({"name": "s", "user_options": {"start_id": start_id}}).start_id == kept


@pytest.mark.parametrize(
    "start_id", [True, None, 1.5, [1], {"a": 1}, "", "a/b", ".", "..", "new\nline", "x" * (MAX_NAME_LENGTH + 1)]
)
def test_any_other_start_id_is_refused(start_id: Any) -> None:
    with pytest.raises(ValidationError, match="start_id"):
        StartRequest.model_validate({"name": "s", "user_options": {"start_id": start_id}})


def test_a_flavor_is_a_non_empty_string_or_none() -> None:
    def flavor(value: Any) -> str | None:
        return StartRequest.model_validate({"name": "s", "user_options": {"flavor": value}}).flavor

    assert (flavor("gpu"), flavor(""), flavor(None)) == ("gpu", None, None)
    with pytest.raises(ValidationError, match="flavor must be a string"):
        flavor(3)


def test_certificates_are_used_for_the_start_and_not_kept() -> None:
    body = {**start_body(), "certs": {"keyfile": "-----BEGIN KEY-----"}, "internal_trust_bundles": {"hub": "ca"}}
    request = StartRequest.model_validate(body)
    assert request.certs == {"keyfile": "-----BEGIN KEY-----"}
    kept = request.without_certs()
    assert "certs" not in kept and "internal_trust_bundles" not in kept
    assert kept["name"] == "srv" and kept["env"]["JUPYTERHUB_USER"] == "alice"
    assert "BEGIN KEY" not in repr(kept)


def test_phases_are_either_active_or_terminal_except_stopping() -> None:
    assert ACTIVE_PHASES == {Phase.PENDING, Phase.STARTING, Phase.RUNNING}
    assert TERMINAL_PHASES == {Phase.STOPPED, Phase.FAILED}
    assert set(Phase) - ACTIVE_PHASES - TERMINAL_PHASES == {Phase.STOPPING}
    assert Phase("running") is Phase.RUNNING and f"{Phase.FAILED}" == "failed"  # stored as their values


@pytest.mark.parametrize(
    ("sid", "shown"),
    [
        (ServiceId("hubA", "srv", "1"), "hubA/srv/1"),
        (ServiceId("hubA", "", "1"), "hubA/<default>/1"),
        (ServiceId("hubA", "my srv\nINFO forged", "1"), 'hubA/"my srv\\nINFO forged"/1'),
        (ServiceId("hub b", "srv", "a=b"), '"hub b"/srv/"a=b"'),
    ],
)
def test_a_service_id_in_a_log_line_is_escaped(sid: ServiceId, shown: str) -> None:
    assert str(sid) == shown and "\n" not in str(sid)


def test_service_ids_are_values() -> None:
    assert ServiceId("h", "n", "1") == ServiceId("h", "n", "1")
    assert len({ServiceId("h", "n", "1"), ServiceId("h", "n", "1"), ServiceId("h", "n", "2")}) == 2


def meta(phase: Phase) -> ServiceMeta:
    return ServiceMeta(
        id=ServiceId("hubA", "srv", "3"), user="alice", user_id="7", flavor="small", phase=phase,
        start_date="2026-12-02T10:00:00Z", end_date="", last_update="2026-12-02T10:01:00Z", exit_code=None,
        address="http://127.0.0.1:8888", state_stored=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("phase", "start_pending", "stop_pending"),
    [
        (Phase.PENDING, True, False),
        (Phase.STARTING, True, False),
        (Phase.RUNNING, False, False),
        (Phase.STOPPING, False, True),
        (Phase.STOPPED, False, False),
        (Phase.FAILED, False, False),
    ],
)
def test_a_listing_entry_has_upstreams_fields(phase: Phase, start_pending: bool, stop_pending: bool) -> None:
    assert meta(phase).listing() == {
        "name": "srv",
        "start_id": "3",
        "start_date": "2026-12-02T10:00:00Z",
        "end_date": "",
        "jupyterhub": "hubA",
        "jupyterhub_userid": "7",
        "last_update": "2026-12-02T10:01:00Z",
        "state_stored": True,
        "start_pending": start_pending,
        "stop_pending": stop_pending,
    }

"""Record encoding (`outpost.store.records`): what HMGET answers becomes the record types, and back."""

from __future__ import annotations

from outpost.models import Phase, ServiceId
from outpost.store.records import (
    PLAIN_FIELDS,
    MetaAndState,
    Secrets,
    Usage,
    decode_meta,
    flatten,
    text,
)


def row(**fields: str) -> list[bytes | None]:
    return [fields[name].encode() if name in fields else None for name in PLAIN_FIELDS]


def test_a_record_decodes_with_its_numbers_and_flags() -> None:
    meta = decode_meta(
        row(hub="hubA", name="lab", start_id="1", user="alice", user_id="7", flavor="gpu", phase="failed",
            start_date="2026-01-01T00:00:00+00:00", end_date="", last_update="x", exit_code="137",
            address="10.0.0.7:8888", state_stored="1", observed="3", observed_at="12.5")
    )  # fmt: skip
    assert meta is not None
    assert (meta.id, meta.user, meta.user_id, meta.flavor, meta.phase) == (
        ServiceId("hubA", "lab", "1"), "alice", "7", "gpu", Phase.FAILED,
    )  # fmt: skip
    assert (meta.exit_code, meta.address, meta.state_stored, meta.observed_exit, meta.observed_at) == (
        137, "10.0.0.7:8888", True, 3, 12.5,
    )  # fmt: skip


def test_empty_fields_decode_as_absent() -> None:
    meta = decode_meta(row(hub="hubA", name="", start_id="1", phase="pending", exit_code="", observed=""))
    assert meta is not None
    assert (meta.exit_code, meta.observed_exit, meta.observed_at, meta.state_stored, meta.user) == (
        None, None, 0.0, False, "",
    )  # fmt: skip


def test_no_record_or_a_hash_without_a_phase_is_none() -> None:
    assert decode_meta([None] * len(PLAIN_FIELDS)) is None
    assert decode_meta(row(hub="hubA", exit_code="0")) is None  # a half-written or foreign hash
    assert decode_meta(row(phase="running")) is None


def test_fields_flatten_to_script_arguments_in_order() -> None:
    assert flatten({"a": "1", "b": b"2"}) == ["a", "1", "b", b"2"]
    assert (text(None), text(b"x"), text("y")) == ("", "x", "y")


def test_answers_are_named() -> None:
    body, state, answer = Secrets({"env": {}}, None, "http://x")
    assert (body, state, answer) == ({"env": {}}, None, "http://x")
    assert Secrets({}, {"pid": 1}, "").state == {"pid": 1}
    assert Usage(1, 2, 3) == (1, 2, 3) and Usage(1, 2, 3).user_flavor == 2
    meta = decode_meta(row(hub="h", name="n", start_id="1", phase="running"))
    assert meta is not None and MetaAndState(meta, None).meta is meta

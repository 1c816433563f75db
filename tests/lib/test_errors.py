"""The exception tree: each error's status, and the 419 body the OutpostSpawner turns into the message
the user sees. The JSON of other answers is built by the routes layer (`error_response`)."""

from __future__ import annotations

import inspect
import re

import pytest

from outpost import errors
from outpost.errors import (
    SPAWN_FAILED,
    AddressTaken,
    BackendError,
    OutpostError,
    SpawnFailed,
    SpawnRefused,
    TooManyAttempts,
    shown,
)


def spawner_message(body: dict[str, object]) -> str:
    """What OutpostSpawner 2.2 shows for a 419 (outpostspawner.py, `send_request`)."""
    args = body.get("args", [])
    assert isinstance(args, list)
    return f"{body.get('module')}{body.get('class')}: {' - '.join(args)}"


def tree() -> dict[str, tuple[str, int | None]]:
    """The module docstring's tree: class name -> (parent, status or None where it is inherited)."""
    stack: list[str] = []
    found: dict[str, tuple[str, int | None]] = {}
    doc = errors.__doc__ or ""
    for line in doc.splitlines():
        match = re.match(r"^ ([│ ]*)[├└]── (\w+)\s*(\d{3})?", line)
        if match:
            depth = len(match.group(1)) // 5
            del stack[depth + 1 :]
            found[match.group(2)] = (
                "OutpostError" if depth == 0 else stack[depth - 1],
                int(match.group(3) or 0) or None,
            )
            stack[depth:] = [match.group(2)]
    return found


ALL = {
    name: cls
    for name, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, OutpostError) and cls is not OutpostError
}


def test_the_documented_tree_is_the_real_one() -> None:
    documented = tree()
    assert set(documented) == set(ALL) - {"ReplicasBehind"}  # a StoreUnavailable the docstring leaves out
    for name, (parent, status) in documented.items():
        cls = ALL[name]
        assert cls.__mro__[1].__name__ == parent, name
        if status is not None:
            assert cls.status == status, name


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("ConfigurationError", 500),
        ("InvalidJSON", 400),
        ("InvalidBody", 400),
        ("InvalidEvent", 400),
        ("IncompleteBody", 400),
        ("BodyTooLarge", 413),
        ("Unauthorized", 401),
        ("TooManyAttempts", 429),
        ("UnknownRoute", 404),
        ("UnknownService", 404),
        ("MethodNotAllowed", 405),
        ("ServiceExists", 409),
        ("UndecryptableRecord", 409),
        ("FlavorFull", 419),
        ("EnvNotAllowed", 419),
        ("BackendError", 419),
        ("StoreUnavailable", 503),
        ("ReplicasBehind", 503),
        ("EventsUnavailable", 503),
    ],
)
def test_status_of_each_error(name: str, status: int) -> None:
    assert ALL[name]("x").status == status


def test_every_error_has_a_message_without_arguments() -> None:
    for name, cls in ALL.items():
        if name == "AddressTaken":
            continue
        error = cls()
        assert error.message and str(error) == error.message and not error.message.startswith(" "), name
        assert repr(error) == f"{name}({error.message!r})"


def test_a_given_message_replaces_the_default() -> None:
    assert errors.UnknownService().message == "no such service"
    assert errors.UnknownService("no such service for hubB").message == "no such service for hubB"


def test_the_419_body_has_the_fields_the_outpostspawner_reads() -> None:
    body = errors.FlavorFull("The flavor GPU is full (10 servers).").protocol_body()
    assert body == {
        "module": "outpost.errors.",
        "class": "FlavorFull",
        "traceback": "",
        "args": ["The flavor GPU is full (10 servers)."],
        "kwargs": {},
    }
    assert spawner_message(body) == "outpost.errors.FlavorFull: The flavor GPU is full (10 servers)."


def test_a_backend_error_carries_its_traceback_and_a_refusal_none() -> None:
    failed = BackendError("the pod did not start", detail='Traceback (most recent call last):\n  File "x"')
    assert failed.protocol_body()["traceback"].startswith("Traceback")
    assert spawner_message(failed.protocol_body()) == "outpost.errors.BackendError: the pod did not start"
    assert errors.UserOverLimit("over").protocol_body()["traceback"] == ""


@pytest.mark.parametrize("name", [n for n, cls in ALL.items() if issubclass(cls, SpawnFailed)])
def test_every_spawn_failure_answers_419_and_every_refusal_is_one(name: str) -> None:
    cls = ALL[name]
    assert cls.status == SPAWN_FAILED == 419
    error = AddressTaken("127.0.0.1:1") if cls is AddressTaken else cls("why")
    assert error.protocol_body()["class"] == name
    if cls is not BackendError and cls is not SpawnFailed:
        assert isinstance(error, SpawnRefused)


def test_address_taken_names_the_address_and_what_to_do() -> None:
    error = AddressTaken("10.0.0.5:8888")
    assert error.message.startswith("The address 10.0.0.5:8888 is already in use on the outpost.")
    assert "choose another one" in error.message


def test_too_many_attempts_says_when_to_retry() -> None:
    assert TooManyAttempts().retry_after == 60
    assert TooManyAttempts(retry_after=300).retry_after == 300


def test_shown_escapes_cuts_and_counts_hub_chosen_names() -> None:
    assert shown(["LD_PRELOAD", "PATH"]) == "LD_PRELOAD, PATH"
    assert shown(["a\nb", "tab\there", "é"]) == r"a\nb, tab\there, \xe9"
    assert shown(["x" * 70]) == "x" * 64 + "..."
    assert shown([f"N{i}" for i in range(23)]) == ", ".join(f"N{i}" for i in range(20)) + " and 3 more"
    assert shown(["A", "B", "C"], limit=2, length=1) == "A, B and 1 more"


class _NameTaken(errors.BackendError):
    """Defined outside outpost.errors, as a backend's own errors are (the kubernetes backend's)."""


def test_an_error_class_of_another_module_shows_as_the_public_class_it_derives_from() -> None:
    """A backend's own subclass is an implementation detail: the hub sees BackendError, and moving
    that backend's module changes nothing the hub sees."""
    error = _NameTaken("pod x in namespace y belongs to another server")
    body = error.protocol_body()
    assert (body["module"], body["class"]) == ("outpost.errors.", "BackendError")
    assert spawner_message(body).startswith("outpost.errors.BackendError: pod x")


def test_a_backend_error_carries_its_detail_as_the_traceback() -> None:
    assert errors.BackendError("failed", detail="Traceback ...").protocol_body()["traceback"] == "Traceback ..."

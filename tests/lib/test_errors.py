"""The 419 body the OutpostSpawner turns into the message its user sees."""

from __future__ import annotations

from typing import Any

from outpost import errors


class _NameTaken(errors.BackendError):
    """Defined outside outpost.errors, as a backend's own errors are (the kubernetes backend's)."""


def shown_by_outpostspawner(body: dict[str, Any]) -> str:
    """What jupyterhub-outpostspawner 2.2 shows for a 419 (OutpostSpawner._outpost_request)."""
    return f"{body.get('module')}{body.get('class')}: {' - '.join(str(arg) for arg in body['args'])}"


def test_a_refusal_reads_as_the_qualified_class_and_the_message() -> None:
    body = errors.FlavorFull("Flavor 'gpu' is full.").protocol_body()
    assert body == {
        "module": "outpost.errors.",
        "class": "FlavorFull",
        "traceback": "",
        "args": ["Flavor 'gpu' is full."],
        "kwargs": {},
    }
    assert shown_by_outpostspawner(body) == "outpost.errors.FlavorFull: Flavor 'gpu' is full."


def test_an_error_class_of_another_module_shows_as_the_public_class_it_derives_from() -> None:
    """A backend's own subclass is an implementation detail: the hub sees BackendError, and moving
    that backend's module changes nothing the hub sees."""
    error = _NameTaken("pod x in namespace y belongs to another server")
    body = error.protocol_body()
    assert (body["module"], body["class"]) == ("outpost.errors.", "BackendError")
    assert shown_by_outpostspawner(body).startswith("outpost.errors.BackendError: pod x")


def test_a_backend_error_carries_its_detail_as_the_traceback() -> None:
    assert errors.BackendError("failed", detail="Traceback ...").protocol_body()["traceback"] == "Traceback ..."

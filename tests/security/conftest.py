"""Fixtures for the attacks: one `outpost dev` with two hubs per test module, stopped cleanly after."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.stack import Evidence, Stack, evidence, launch, shut_down


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def stack_values() -> dict[str, Any] | None:
    """YAML values over the stack's defaults; a module overrides this to configure its hubs."""
    return None


@pytest.fixture(scope="module")
def stack(stack_dir: Path, stack_values: dict[str, Any] | None) -> Iterator[Stack]:
    """`outpost dev` with hubA (the README's recommended overrides) and hubB (the default policy)."""
    running = launch(stack_dir, f"security-{secrets.token_hex(4)}", values=stack_values)
    yield running
    shut_down(running)


@pytest.fixture
def proof() -> Iterator[Evidence]:
    """Where an attack would write: in /tmp, which a server running as an unprivileged user can write too."""
    yield from evidence(Path(tempfile.gettempdir()), f"outpost-attack-{secrets.token_hex(6)}")


@pytest.fixture
def clean(stack: Stack) -> Iterator[Stack]:
    """The shared stack, with every service stopped after the test."""
    yield stack
    stack.stop_all()

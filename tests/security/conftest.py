"""Fixtures for the attacks: one `outpost dev` with two hubs per test module, stopped cleanly after."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.stack import Stack, launch, shut_down


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def stack(stack_dir: Path) -> Iterator[Stack]:
    """`outpost dev` with hubA (the README's recommended overrides) and hubB (the default policy)."""
    running = launch(stack_dir, f"security-{secrets.token_hex(4)}")
    yield running
    shut_down(running)


@pytest.fixture
def clean(stack: Stack) -> Iterator[Stack]:
    """The shared stack, with every service stopped after the test."""
    yield stack
    stack.stop_all()

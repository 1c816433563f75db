"""What a backend hands back while it starts a server: the states it saves and the progress it reports."""

from __future__ import annotations

from typing import Any


class Recorder:
    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []
        self.progress: list[tuple[int, str]] = []

    async def save(self, state: dict[str, Any]) -> None:
        self.states.append(dict(state))

    async def report(self, percent: int, message: str) -> None:
        self.progress.append((percent, message))

"""SIGINT, SIGTERM and SIGHUP for `outpost dev`: the first asks for a clean stop, a second forces it."""

from __future__ import annotations

import asyncio
import contextlib
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def say(text: str) -> None:
    """Print a line; after SIGHUP the terminal may be gone, and the shutdown must go on without it."""
    with contextlib.suppress(OSError, ValueError):
        print(text, flush=True)


class Signals:
    """Handlers on the running loop; `requested` is set by the first signal, `forced` by the second."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()
        self.received: list[int] = []
        loop = asyncio.get_running_loop()
        for signum in SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self.received.append(signum)
        if self.requested.is_set():
            self.forced.set()
            say(f"{signal.Signals(signum).name} again: stopping now, without waiting")
        else:
            self.requested.set()
            say(f"{signal.Signals(signum).name}: stopping (send it again to force)")

    @property
    def first(self) -> str:
        return signal.Signals(self.received[0]).name if self.received else "shutdown"

    def exit_code(self) -> int:
        """0 for a clean stop; 128 + the signal's number when a second signal forced it."""
        return 128 + self.received[-1] if self.forced.is_set() else 0

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)

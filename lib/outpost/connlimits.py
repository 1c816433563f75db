"""Caps on connections that have not yet proved anything, shared by the SSH daemon and the API server:
per-source counts, OpenSSH's `MaxStartups` early drop, and a refusal log that says each source once.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EarlyDrop", "RefusalLog", "SourceCounts", "source_of"]

LOG_INTERVAL_SECONDS = 60.0
MAX_LOGGED_SOURCES = 4096  # sources remembered by the refusal log; older ones are forgotten first


def source_of(peer: str) -> str:
    """The source a connection counts against: its address, an IPv4-mapped IPv6 one as IPv4."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True)
class EarlyDrop:
    """OpenSSH's `MaxStartups start:rate:full`: with `start` or more connections pending, refuse a
    new one with probability `rate`%, rising linearly to 100% at `full`."""

    start: int
    rate: int
    full: int

    @classmethod
    def parse(cls, text: str) -> EarlyDrop:
        """ "10:30:100", or one number N (refuse every connection beyond N); ValueError names the problem."""
        parts = text.strip().split(":")
        if not all(part.isascii() and part.isdigit() for part in parts) or len(parts) not in (1, 3):
            raise ValueError(f"max startups: {text.strip()[:40]!r} is not start:rate:full nor a number")
        if len(parts) == 1:
            return cls(int(parts[0]), 100, int(parts[0]))
        start, rate, full = (int(part) for part in parts)
        if not (0 < start <= full and rate <= 100):
            raise ValueError(f"max startups: {text.strip()}: need 0 < start <= full and rate <= 100")
        return cls(start, rate, full)

    def refuses(self, pending: int, draw: Callable[[], float] = random.random) -> bool:
        """Whether a new connection is refused while `pending` others are (`draw`: uniform in [0, 1))."""
        if pending >= self.full:
            return True
        if pending < self.start:
            return False
        chance = self.rate + (100 - self.rate) * (pending - self.start) / (self.full - self.start)
        return draw() * 100 < chance


class SourceCounts:
    """Connections held per source; `None` limit: counted, never refused."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()

    def claim(self, source: str) -> bool:
        if self.limit is not None and self._held[source] >= self.limit:
            return False
        self._held[source] += 1
        return True

    def release(self, source: str) -> None:
        self._held[source] -= 1
        if self._held[source] <= 0:
            del self._held[source]

    def __getitem__(self, source: str) -> int:
        return self._held.get(source, 0)

    def total(self) -> int:
        return self._held.total()


class RefusalLog:
    """One warning per source and interval for connections refused by a cap, counting those it did
    not print: a flood from one source is one line a minute, not one per connection."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._sources: dict[str, tuple[float, int]] = {}  # source -> (last line, refusals since)

    def refused(self, source: str, why: str, action: str = "refused") -> None:
        now = self._clock()
        last, unsaid = self._sources.get(source, (now - self._interval, 0))
        if now - last < self._interval:
            self._sources[source] = (last, unsaid + 1)
            return
        self._sources.pop(source, None)
        if len(self._sources) >= MAX_LOGGED_SOURCES:  # dicts keep insertion order: drop the oldest line
            del self._sources[next(iter(self._sources))]
        self._sources[source] = (now, 0)
        more = f" ({unsaid} more since the last line)" if unsaid else ""
        self._logger.warning("connection %s source=%s: %s%s", action, source, why, more)

"""Failed logins are limited per source, counted in Redis so every function instance and the SSH daemon agree.

This module decides what a failure costs and words the refusal; `outpost.store.LoginCounters` counts,
in one Lua script per failure, so the count and the decision are one step.

A failed guess is answered only after it was counted: of N concurrent wrong passwords from one source,
at most `per_source` get 401 and the rest 429, however many instances check them at once. A source
that used up its budget gets 429 for every hub, right passwords included, until its window ends.
Right credentials from a source without failures are never refused: no one else's failures close a
hub. Distributed guessing is bounded per hub name instead: once a hub name's bucket has seen
`per_hub` failures in the window, each source gets one more failure, not `per_source`, so every
further guess costs the attacker a new source address (an IPv6 source is its /64).

Sources and hub names come from the request, so neither reaches a key as it is: a source is hashed,
and hub names are hashed into HUB_BUCKETS buckets, however many names are tried and however long
(`outpost.auth` caps the Authorization header before decoding it). Known and unknown names are
bucketed alike: were unknown names treated apart, whether a name's bucket closes would tell an
attacker that the name exists.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass
from typing import Protocol

from outpost.errors import TooManyAttempts

# How long a source's standing read for credentials it proved before stands, per process, and how many
# sources are remembered (a hub polls from a few).
ADMITTED_SECONDS = 1.0
ADMITTED_SOURCES = 10_000
HUB_BUCKETS = 1024  # a few hubs rarely share one; sharing only lowers each source's budget for both
IPV6_SOURCE_PREFIX = 64  # one site's network: its hosts pick their addresses in it freely


@dataclass(frozen=True)
class LoginLimits:
    per_source: int
    per_hub: int
    window_seconds: int


class FailureCounts(Protocol):
    """`outpost.store.LoginCounters`: the shared counts, by source id and hub bucket."""

    async def blocked(self, source: str) -> bool: ...

    async def count_failure(self, source: str, bucket: str | None, limits: LoginLimits) -> bool: ...


def _digest(value: str) -> str:
    # All of it: the header caps bound the work, and a cut would let long names that differ late collide.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _counted_as(source: str) -> str:
    """The address whose budget a source spends: an IPv6 address's /64, an IPv4-mapped one's IPv4."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:  # "unknown", or what a trusted proxy wrote: counted as it is
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False))
    return source


def source_id(source: str) -> str:
    """A source as keys hold it: fixed size, whatever the request said."""
    return _digest(_counted_as(source))


def hub_bucket(hub: str) -> str:
    """The bucket a hub name's failures count in."""
    return str(int(_digest(hub)[:8], 16) % HUB_BUCKETS)


class LoginGuard:
    """Takes sources and hub names as the request gave them; only their ids reach Redis."""

    def __init__(self, counts: FailureCounts, limits: LoginLimits) -> None:
        self._counts = counts
        self._limits = limits
        self._admitted: dict[str, float] = {}  # source -> until when its standing stands for known credentials

    async def admit(self, source: str, *, known: bool = False) -> None:
        """For right credentials: TooManyAttempts if the source used up its failures (one Redis read).
        `known`: the very credentials proved themselves before in this process (`auth.HubLogins`), so a read
        of the source's standing less than ADMITTED_SECONDS old stands: a hub's polls cost one read a second,
        not one each. A new guess, even a right one, always reads: none is answered beyond the budget."""
        now = time.monotonic()
        if known and self._admitted.get(source, 0.0) > now:
            return
        if await self._counts.blocked(source_id(source)):
            raise TooManyAttempts(retry_after=self._limits.window_seconds)
        if known:
            if len(self._admitted) >= ADMITTED_SOURCES:
                self._admitted.clear()
            self._admitted[source] = now + ADMITTED_SECONDS

    async def fail(self, source: str, hub: str | None) -> None:
        """Count a failed login (`hub`: the name it tried; None for an SSH key); TooManyAttempts when
        the source's budget was used up before it, so the caller must not answer it as checked."""
        self._admitted.pop(source, None)  # its next known login reads its standing again
        bucket = None if hub is None else hub_bucket(hub)
        if not await self._counts.count_failure(source_id(source), bucket, self._limits):
            raise TooManyAttempts(retry_after=self._limits.window_seconds)

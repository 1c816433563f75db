"""Caps: how many connections one authorized key may hold open at once."""

from __future__ import annotations

from collections import defaultdict

__all__ = ["ConnectionCounter"]


class ConnectionCounter:
    """Connections per key fingerprint, shared by all connections of one listener.

    A connection claims its key once authenticated and releases it when it closes; `claim` is
    idempotent for a connection that already holds the key.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._holders: defaultdict[str, set[object]] = defaultdict(set)

    def claim(self, fingerprint: str, conn: object) -> bool:
        holders = self._holders[fingerprint]
        if conn in holders:
            return True
        if len(holders) >= self.limit:
            return False
        holders.add(conn)
        return True

    def release(self, fingerprint: str, conn: object) -> None:
        holders = self._holders.get(fingerprint)
        if holders is not None:
            holders.discard(conn)
            if not holders:
                del self._holders[fingerprint]

    def count(self, fingerprint: str) -> int:
        return len(self._holders.get(fingerprint, ()))

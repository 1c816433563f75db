"""Who is calling: the socket peer, or behind configured proxies the address they vouch for.

Every proxy appends the address it received the request from to `X-Forwarded-For`, so the chain
`X-Forwarded-For entries..., socket peer` is written right to left, each entry by the host to its
right. Entries are believable only as far as the hosts that wrote them are trusted: walking from
the peer leftwards, the caller is the first address that is not a trusted proxy. Whatever a client
sends itself sits left of that and is never read. A chain with no such address (fewer entries than
hops, or every one a proxy's) did not come the way the proxies are configured: its caller is the
socket peer, as Envoy does with too few entries, never an entry someone may have made up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 32


@dataclass(frozen=True)
class TrustedProxies:
    """`OUTPOST_TRUSTED_PROXIES`: a hop count (the last N hosts of the chain are proxies), or the
    networks proxies connect from. Empty: no proxy is trusted, the caller is the socket peer."""

    hops: int = 0
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, value: str) -> TrustedProxies:
        """Empty, a hop count ("2") or networks ("10.0.0.0/8, 127.0.0.1"); ValueError names the problem."""
        text = value.strip()
        if not text:
            return cls()
        if text.isascii() and text.isdigit():
            hops = int(text)
            if hops > MAX_HOPS:
                raise ValueError(f"trusted proxies: at most {MAX_HOPS} hops, not {hops}")
            return cls(hops=hops)
        networks = []
        for item in (part.strip() for part in text.split(",")):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                problem = f"trusted proxies: {item[:60]!r} is neither a hop count nor an address or CIDR"
                raise ValueError(problem) from None
        return cls(networks=tuple(networks))

    def caller(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The caller's address, given the socket peer and the `X-Forwarded-For` header lines."""
        if not self.hops and not self.networks:
            return peer
        chain = [entry.strip() for line in forwarded_for for entry in line.split(",")] + [peer]
        if self.hops:
            return _address(chain[-1 - self.hops]) if len(chain) > self.hops else peer
        for entry in reversed(chain):
            if not self._trusted(entry):
                return _address(entry)
        return peer

    def is_proxy(self, peer: str) -> bool:
        """Whether a socket peer is one of the proxies: with a hop count, every peer is."""
        return bool(self.hops) or self._trusted(peer)

    def _trusted(self, entry: str) -> bool:
        try:
            address = ipaddress.ip_address(_address(entry))
        except ValueError:
            return False  # not an address ("unknown", garbage): no proxy we know wrote it
        return any(address in network for network in self.networks)


def _address(entry: str) -> str:
    """The address of an entry, without the port some proxies add ("[::1]:80", "10.0.0.1:80")."""
    if entry.startswith("["):
        return entry[1:].partition("]")[0]
    host, sep, port = entry.rpartition(":")
    if sep and host.count(":") == 0 and port.isascii() and port.isdigit():
        return host
    return entry

"""Which URLs the outpost calls back for a hub: its `callbackUrls`, and the addresses never called.

A `hubOptions.<hub>.callbackUrls` entry is a URL prefix, `scheme://host[:port][/path]`. A URL is
admitted when its scheme, host and port equal the entry's (the scheme's default port when none is
written: `https://hub.example.org` is port 443) and its path is the entry's path or lies below it
at a "/". Hosts compare whole, never as strings: `https://hub.example.org` does not admit
`https://hub.example.org.evil.com` nor `https://hub.example.org:8443`.

Whatever the list says, the outpost never connects to link-local or cloud metadata addresses, nor
to its own listening ports on a local address; `guarded_http` enforces that on the address it
actually connects to. This module is stdlib-only: the settings import it at every cold start.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

CALLBACK_VARIABLES = ("JUPYTERHUB_EVENTS_URL", "JUPYTERHUB_SETUPTUNNEL_URL", "JUPYTERHUB_FLAVORS_UPDATE_URL")
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Never called: link-local ranges (where AWS, GCP, Azure, OpenStack, DigitalOcean and Oracle serve
# instance metadata at 169.254.169.254, ECS task metadata at 169.254.170.2, Tencent at 169.254.0.23)
# and the metadata services of clouds that use other addresses.
NEVER_CALLED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6
        "fd20:ce::254/128",  # Google Cloud metadata server over IPv6
        "fd00:c1::a9fe:a9fe/128",  # Oracle Cloud instance metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud instance metadata
        "168.63.129.16/32",  # Azure WireServer (platform agent)
        "192.0.0.192/32",  # Oracle Cloud Classic instance metadata
    )
)


@dataclass(frozen=True)
class Prefix:
    """One `callbackUrls` entry."""

    scheme: str
    host: str
    port: int
    path: str  # without a trailing "/"; "" admits every path

    def admits(self, scheme: str, host: str, port: int, path: str) -> bool:
        if (scheme, host, port) != (self.scheme, self.host, self.port):
            return False
        return path == self.path or path.startswith(self.path + "/")


def parse_prefix(text: str) -> Prefix:
    """A `callbackUrls` entry; ValueError says what is wrong with it."""
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{text!r}: a callback URL prefix starts with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a callback URL prefix has no user, password, query or fragment")
    if _has_dot_segment(parts.path):
        raise ValueError(f"{text!r}: '.' and '..' are not allowed in the path")
    port = parts.port or DEFAULT_PORTS[scheme]  # .port raises ValueError for a bad one
    return Prefix(scheme, _host(parts.hostname), port, parts.path.rstrip("/"))


def _host(host: str) -> str:
    """A host as httpx gives it: lower case, IDNA-encoded names, IPv6 without brackets."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().encode("idna").decode("ascii")


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in unquote(path).split("/"))


def never_called(ip: IPAddress, port: int, own_ports: Collection[int], local: Collection[IPAddress] = ()) -> str:
    """Why the outpost never connects to `ip:port` ("" when it may): a link-local or metadata
    address, or one of its own ports on a loopback, unspecified or `local` address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in NEVER_CALLED):
        return f"{ip} is a link-local or cloud metadata address"
    if port in own_ports and (ip.is_loopback or ip.is_unspecified or ip in local):
        return f"{ip} port {port} is the outpost's own listener"
    return ""


class CallbackPolicy:
    """The checks made before a URL is called: the hub's `callbackUrls` and literal addresses."""

    def __init__(self, callback_urls: Mapping[str, Iterable[str] | None], own_ports: Collection[int] = ()) -> None:
        self._prefixes = {
            hub: tuple(parse_prefix(entry) for entry in entries)
            for hub, entries in callback_urls.items()
            if entries is not None
        }
        self.own_ports = frozenset(own_ports)

    def restricts(self, hub: str) -> bool:
        return hub in self._prefixes

    def refusal(self, hub: str, url: str) -> str:
        """Why `url` is not called for `hub` ("" when it may be, up to the connect-time check)."""
        import httpx  # parsed as the client that would call it parses it; only the hub client needs it

        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            return "it is not a valid URL"
        scheme = parsed.scheme
        if scheme not in DEFAULT_PORTS or not parsed.host:
            return "it is not an http or https URL"
        host, port = _host(parsed.host), parsed.port or DEFAULT_PORTS[scheme]
        prefixes = self._prefixes.get(hub)
        if prefixes is not None and (
            _has_dot_segment(parsed.path) or not any(p.admits(scheme, host, port, parsed.path) for p in prefixes)
        ):
            return f"it is not under hubOptions.{hub}.callbackUrls"
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return ""  # a name: its addresses are checked when the connection is made
        return never_called(literal, port, self.own_ports)

    def refusals(self, hub: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
        """The callback variables of a start's env that will not be called, each with the reason."""
        refused = ((name, self.refusal(hub, env[name])) for name in CALLBACK_VARIABLES if env.get(name))
        return [(name, reason) for name, reason in refused if reason]

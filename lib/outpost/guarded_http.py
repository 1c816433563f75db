"""The HTTP client for calls to hubs: every connection goes only to an address checked just before.

httpcore's network backend is the one place a host name becomes a connected socket, so the guard
lives there: `connect_tcp` resolves the name, refuses the connection when any address is one the
outpost never calls (`callbacks.never_called`), and connects to the checked address itself, so a
DNS answer that changes between the check and the connection (rebinding) changes nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Iterable

import httpcore
import httpx

from outpost.callbacks import IPAddress, never_called

Resolve = Callable[[str, int], Awaitable[list[str]]]


class AddressRefused(httpcore.ConnectError):
    """A connection the outpost never makes; the message names the address, never the URL."""


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, in the resolver's order, without repeats."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


def local_addresses() -> frozenset[IPAddress]:
    """The addresses of this machine's interfaces, read when a connection is made (they change)."""
    import psutil

    found = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                found.add(ipaddress.ip_address(entry.address.split("%", 1)[0]))
    return frozenset(found)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses that `callbacks.never_called` lets through."""

    def __init__(
        self,
        own_ports: Collection[int],
        inner: httpcore.AsyncNetworkBackend | None = None,
        resolver: Resolve = resolve,
        local: Callable[[], Collection[IPAddress]] = local_addresses,
    ) -> None:
        self._own_ports = frozenset(own_ports)
        self._inner = inner or httpcore.AnyIOBackend()
        self._resolve = resolver
        self._local = local

    async def checked(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The addresses to connect to; AddressRefused when any of them is never called."""
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving the host took over {timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve the host: {exc.strerror or exc}") from None
        local: Collection[IPAddress] | None = None
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if local is None and port in self._own_ports:
                local = self._local()
            reason = never_called(ip, port, self._own_ports, local or ())
            if reason:
                raise AddressRefused(reason)
        if not addresses:
            raise httpcore.ConnectError("the host has no address")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: httpcore.ConnectError | None = None
        for address in await self.checked(host, port, timeout):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # the next address may answer
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("a hub is never called over a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a connection pool that uses the guard. httpx takes no network
    backend as a parameter (encode/httpx discussion 3180), so the pool it built is replaced by an
    equal one that does."""

    def __init__(
        self,
        backend: httpcore.AsyncNetworkBackend,
        verify: bool | ssl.SSLContext = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        ssl_context = httpx.create_ssl_context(verify=verify)  # honours SSL_CERT_FILE and SSL_CERT_DIR
        super().__init__(verify=ssl_context, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def callback_client(
    own_ports: Collection[int], timeout: float | httpx.Timeout, verify: bool | ssl.SSLContext = True
) -> httpx.AsyncClient:
    """The client for a hub's URLs. `trust_env=False`: a proxy from HTTP(S)_PROXY would make the
    connection the guard checks one to the proxy, which then reaches any address for us."""
    transport = GuardedTransport(GuardedNetworkBackend(own_ports), verify)
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False, follow_redirects=False)


def refused_address(exc: BaseException) -> str:
    """The guard's reason when `exc` (as httpx raised it) is a refused connection, else ""."""
    cause = exc.__cause__
    return str(cause) if isinstance(cause, AddressRefused) else ""

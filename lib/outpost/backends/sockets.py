"""Whose socket listens at an address: a backend publishes a server's address only once every socket
a connection there could reach belongs to the processes it started (Linux: the LISTEN sockets' inodes
in /proc/net/tcp* against /proc/<pid>/fd; psutil where there is no /proc)."""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from outpost.errors import AddressTaken, BackendError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Members = Callable[[], Iterable[int]]  # the pids that count as the server, computed only when needed
_HAS_PROC = os.path.exists("/proc/net/tcp")
_LISTEN = "0A"  # TCP_LISTEN, as /proc/net/tcp prints the state
_ANY4 = ipaddress.IPv4Address("0.0.0.0")
_ANY6 = ipaddress.IPv6Address("::")
_LOOPBACK4 = ipaddress.IPv4Address("127.0.0.1")
_LOOPBACK6 = ipaddress.IPv6Address("::1")


class Ownership(enum.Enum):
    NOBODY = "nobody"  # nothing listens there (yet)
    OURS = "ours"  # every socket a connection there could reach is held by one of the members
    FOREIGN = "foreign"  # at least one is held by another process


def reachable_by(target: IPAddress) -> frozenset[IPAddress]:
    """The local addresses whose listeners may take a connection to `target`: the address itself and the
    wildcards (an IPv6 one may be dual-stack), in either family's spelling. The kernel prefers the exact
    match, but a wildcard listener of someone else's must not hide behind ours, nor ours behind theirs."""
    if target.is_unspecified:  # a connection to 0.0.0.0 or :: goes to the loopback address
        target = _LOOPBACK4 if isinstance(target, ipaddress.IPv4Address) else _LOOPBACK6
    v4 = target if isinstance(target, ipaddress.IPv4Address) else target.ipv4_mapped
    found: set[IPAddress] = {target, _ANY6}
    if v4 is not None:
        found |= {v4, _ANY4, ipaddress.IPv6Address(f"::ffff:{v4}"), ipaddress.IPv6Address("::ffff:0.0.0.0")}
    return frozenset(found)


def _targets(host: str, port: int) -> frozenset[IPAddress]:
    try:
        addresses: set[IPAddress] = {ipaddress.ip_address(host)}
    except ValueError:  # a name (the administrator's `ip`): every address it resolves to
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a label the IDNA codec refuses
            raise BackendError(f"cannot resolve the server's host {host!r}: {exc}") from None
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    return frozenset().union(*(reachable_by(address) for address in addresses))


def _proc_address(hex_address: str) -> IPAddress:
    """An address as /proc/net/tcp* prints it: 32-bit words in host byte order, as hex."""
    words = [struct.pack("=I", int(hex_address[i : i + 8], 16)) for i in range(0, len(hex_address), 8)]
    packed = b"".join(words)
    return ipaddress.IPv4Address(packed) if len(packed) == 4 else ipaddress.IPv6Address(packed)


def _proc_listeners(port: int) -> Iterator[tuple[IPAddress, int]]:
    """(local address, socket inode) of every LISTEN socket on `port`, IPv4 and IPv6."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:  # a kernel without IPv6
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _LISTEN and fields[1].endswith(suffix):
                yield _proc_address(fields[1][: -len(suffix)]), int(fields[9])


def _socket_inodes(pids: Iterable[int]) -> set[int]:
    """The inodes of the sockets these processes hold open."""
    inodes = set()
    for pid in pids:
        try:
            with os.scandir(f"/proc/{pid}/fd") as entries:
                for entry in entries:
                    try:
                        link = os.readlink(entry.path)
                    except OSError:  # closed meanwhile
                        continue
                    if link.startswith("socket:["):
                        inodes.add(int(link[8:-1]))
        except OSError:  # gone, or not ours to look at: then it proves nothing
            continue
    return inodes


def _ownership_from_proc(targets: frozenset[IPAddress], port: int, members: Members) -> Ownership:
    inodes = {inode for address, inode in _proc_listeners(port) if address in targets}
    if not inodes:
        return Ownership.NOBODY
    return Ownership.OURS if inodes <= _socket_inodes(members()) else Ownership.FOREIGN


def _ownership_from_psutil(targets: frozenset[IPAddress], port: int, members: Members) -> Ownership:
    """The same question where there is no /proc (a laptop running macOS)."""
    import psutil

    def listens(connection: Any) -> bool:
        return bool(
            connection.status == psutil.CONN_LISTEN
            and connection.laddr.port == port
            and ipaddress.ip_address(connection.laddr.ip.split("%")[0]) in targets
        )

    ours = set(members())
    try:
        holders = {c.pid for c in psutil.net_connections(kind="inet") if listens(c)}
    except psutil.AccessDenied:  # macOS without root: only our own processes' sockets can be seen
        holders = set()
        for pid in ours:
            try:
                if any(listens(c) for c in psutil.Process(pid).net_connections(kind="inet")):
                    holders.add(pid)
            except psutil.Error:  # gone meanwhile
                continue
    if not holders:
        return Ownership.NOBODY
    return Ownership.OURS if holders <= ours else Ownership.FOREIGN


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (for a spawner's server, which may not lead a process group)."""
    import psutil

    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


async def wait_until_served(
    host: str, port: int, members: Members, exit_code: Callable[[], Awaitable[int | None]], timeout: float
) -> None:
    """Wait until the server listens at host:port on sockets of its own processes. Raises AddressTaken as soon
    as another process listens there (our server could never be the only one reached), BackendError when the
    server exits first or does not listen within `timeout` seconds."""
    targets = _targets(host, port)
    check = _ownership_from_proc if _HAS_PROC else _ownership_from_psutil
    deadline = time.monotonic() + timeout
    pause = 0.005  # a quick server listens within milliseconds; a notebook server takes seconds
    while True:
        # A connect is the cheap look; whose socket answered is asked only then, in a thread: the kernel
        # writes out every TCP socket of the host into /proc/net/tcp, a cost that grows with the host's
        # sockets (docs/performance.md).
        if await _accepts(host, port):
            found = await asyncio.to_thread(check, targets, port, members)
            if found is Ownership.OURS:
                return
            if found is Ownership.FOREIGN:
                raise AddressTaken(f"{host}:{port}")
        code = await exit_code()
        if code is not None:
            raise BackendError(f"the server exited with code {code} before it was ready")
        if time.monotonic() >= deadline:
            raise BackendError(f"the server did not answer within {timeout:.0f} seconds")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)

"""Whose socket listens at an address: a backend publishes a server's address only once every socket
a connection there could reach belongs to the processes it started (Linux: the LISTEN sockets' inodes,
from the kernel's socket diagnostics or /proc/net/tcp*, against /proc/<pid>/fd; psutil where there is
no /proc).

On Linux every start waiting on an event loop is served by one look at the host's listening sockets
every TICK_SECONDS (netlink sock_diag lists only LISTEN sockets, whatever else the host holds), so a
start sees its server listen within a tick of the moment it does, at one small request per tick for
all of them (docs/performance.md)."""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import os
import socket
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from outpost.errors import AddressTaken, BackendError

TICK_SECONDS = 0.002  # how often the waiting starts' ports are looked for among the listening sockets
_PROC_TICK_SECONDS = 0.02  # the same from /proc/net/tcp*, where netlink is refused: a far larger read

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
    yield from _proc_table_listeners({port}).get(port, [])


def _proc_table_listeners(ports: set[int]) -> dict[int, list[tuple[IPAddress, int]]]:
    """port -> (local address, socket inode) of the LISTEN sockets on these ports, from /proc/net/tcp*."""
    found: dict[int, list[tuple[IPAddress, int]]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:  # a kernel without IPv6
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != _LISTEN:
                continue
            address, _, port_hex = fields[1].rpartition(":")
            if (port := int(port_hex, 16)) in ports:
                found.setdefault(port, []).append((_proc_address(address), int(fields[9])))
    return found


# netlink sock_diag (linux/inet_diag.h): a dump of the TCP sockets in LISTEN state, one family at a time.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_DUMP_REQUEST = 0x1 | 0x300  # NLM_F_REQUEST | NLM_F_DUMP
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCPF_LISTEN = 1 << 10
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_DIAG_REQUEST = struct.Struct("=BBBBI48s")  # inet_diag_req_v2: family, protocol, ext, pad, states, socket id
# inet_diag_msg: family, state, timer, retransmits, then the socket id (source port, destination port,
# source and destination address, interface, cookie), expires, queues, uid, inode
_DIAG_MESSAGE = struct.Struct("=BBBB2s2s16s16sI8sIIIII")


class _SockDiag:
    """The host's LISTEN sockets from the kernel's socket diagnostics (one netlink socket, kept open)."""

    def __init__(self) -> None:
        self._netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
        self._sequence = 0

    def close(self) -> None:
        self._netlink.close()

    def listeners(self, ports: set[int]) -> dict[int, list[tuple[IPAddress, int]]]:
        """port -> (local address, socket inode) of the LISTEN sockets on these ports."""
        found: dict[int, list[tuple[IPAddress, int]]] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            self._sequence += 1
            request = _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, _TCPF_LISTEN, b"")
            header = _NLMSG.pack(
                _NLMSG.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_DUMP_REQUEST, self._sequence, 0
            )
            self._netlink.send(header + request)
            while not self._read_part(ports, found):
                pass
        return found

    def _read_part(self, ports: set[int], found: dict[int, list[tuple[IPAddress, int]]]) -> bool:
        """Read one datagram of the dump into `found`; True once the dump is complete."""
        data = self._netlink.recv(65536)
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
            if kind == _NLMSG_DONE:
                return True
            if kind == _NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
                raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
            family, _, _, _, sport, _, source, *_, inode = _DIAG_MESSAGE.unpack_from(data, offset + _NLMSG.size)
            port = int.from_bytes(sport, "big")
            if port in ports:
                address = (
                    ipaddress.IPv4Address(source[:4]) if family == socket.AF_INET else ipaddress.IPv6Address(source)
                )
                found.setdefault(port, []).append((address, inode))
            offset += (length + 3) & ~3
        return False


def _socket_inodes(pids: Iterable[int], wanted: set[int] | None = None) -> set[int]:
    """The inodes of the sockets these processes hold open; with `wanted`, the pids are looked at only
    until all of those are found (members come cheapest first)."""
    inodes: set[int] = set()
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
        if wanted is not None and wanted <= inodes:
            break
    return inodes


def _owner(inodes: set[int], members: Members) -> Ownership:
    """Whether the members hold every one of these listening sockets."""
    if not inodes:
        return Ownership.NOBODY
    return Ownership.OURS if inodes <= _socket_inodes(members(), inodes) else Ownership.FOREIGN


def _ownership_from_proc(targets: frozenset[IPAddress], port: int, members: Members) -> Ownership:
    return _owner({inode for address, inode in _proc_listeners(port) if address in targets}, members)


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


Listeners = dict[int, list[tuple[IPAddress, int]]]


class _Watch:
    """The starts waiting on one event loop, and the one task that looks for their ports every tick."""

    def __init__(self) -> None:
        self._waiting: dict[int, set[asyncio.Future[list[tuple[IPAddress, int]]]]] = {}
        self._task: asyncio.Task[None] | None = None

    def look(self, port: int) -> asyncio.Future[list[tuple[IPAddress, int]]]:
        """Resolved with the port's listeners at the first tick that finds any."""
        future: asyncio.Future[list[tuple[IPAddress, int]]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(port, set()).add(future)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return future

    def forget(self, port: int, future: asyncio.Future[list[tuple[IPAddress, int]]]) -> None:
        waiting = self._waiting.get(port)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[port]

    async def _run(self) -> None:
        try:
            diag: _SockDiag | None = _SockDiag()
        except OSError:  # no netlink here (a sandbox): the /proc tables, in a thread, less often
            diag = None
        try:
            while self._waiting:
                ports = set(self._waiting)
                try:
                    found = diag.listeners(ports) if diag else await asyncio.to_thread(_proc_table_listeners, ports)
                except OSError as exc:
                    for waiting in self._waiting.values():
                        for future in waiting:
                            if not future.done():
                                future.set_exception(BackendError(f"cannot list the listening sockets: {exc}"))
                    return
                for port, listeners in found.items():
                    for future in self._waiting.pop(port, ()):
                        if not future.done():
                            future.set_result(listeners)
                await asyncio.sleep(TICK_SECONDS if diag else _PROC_TICK_SECONDS)
        finally:
            if diag is not None:
                diag.close()


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = weakref.WeakKeyDictionary()


def _watch() -> _Watch:
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = _Watch()
    return watch


async def wait_until_served(
    host: str, port: int, members: Members, exit_code: Callable[[], Awaitable[int | None]], timeout: float
) -> None:
    """Wait until the server listens at host:port on sockets of its own processes. Raises AddressTaken as soon
    as another process listens there (our server could never be the only one reached), BackendError when the
    server exits first or does not listen within `timeout` seconds."""
    targets = _targets(host, port)
    if not _HAS_PROC:
        return await _wait_connecting(host, port, targets, members, exit_code, timeout)
    watch = _watch()
    deadline = time.monotonic() + timeout
    pause = 0.005  # between looks at whether the server exited: growing, as a notebook server takes seconds
    while True:
        look = watch.look(port)
        try:
            listeners = await asyncio.wait_for(asyncio.shield(look), max(0.0, min(pause, deadline - time.monotonic())))
        except TimeoutError:
            listeners = None
        finally:
            watch.forget(port, look)
        if listeners is not None:  # something listens on the port: whose, among what a connection may reach?
            found = _owner({inode for address, inode in listeners if address in targets}, members)
            if found is Ownership.OURS:
                return
            if found is Ownership.FOREIGN:
                raise AddressTaken(f"{host}:{port}")
        await _unless_given_up(exit_code, deadline, timeout)
        if listeners is None:
            pause = min(pause * 2, 0.05)


async def _unless_given_up(exit_code: Callable[[], Awaitable[int | None]], deadline: float, timeout: float) -> None:
    """BackendError once the server has exited, or the wait has lasted `timeout`."""
    code = await exit_code()
    if code is not None:
        raise BackendError(f"the server exited with code {code} before it was ready")
    if time.monotonic() >= deadline:
        raise BackendError(f"the server did not answer within {timeout:.0f} seconds")


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


async def _wait_connecting(
    host: str, port: int, targets: frozenset[IPAddress], members: Members,
    exit_code: Callable[[], Awaitable[int | None]], timeout: float,
) -> None:  # fmt: skip
    """Without /proc (macOS): a connect is the cheap look; whose socket answered is asked only then."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        if await _accepts(host, port):
            found = await asyncio.to_thread(_ownership_from_psutil, targets, port, members)
            if found is Ownership.OURS:
                return
            if found is Ownership.FOREIGN:
                raise AddressTaken(f"{host}:{port}")
        await _unless_given_up(exit_code, deadline, timeout)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)

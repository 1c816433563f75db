"""Whose socket listens at an address, from /proc and from psutil, with real sockets and processes."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import psutil
import pytest

from outpost.backends import sockets
from outpost.backends.sockets import Ownership
from outpost.errors import AddressTaken, BackendError
from tests.e2e.processes import wait_until

Check = Callable[[frozenset[sockets.IPAddress], int, sockets.Members], Ownership]
CHECKS = [sockets._ownership_from_proc, sockets._ownership_from_psutil]
# A listener in a process of its own, which prints its port once it listens.
LISTENER = """
import socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.socket(family)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.listen()
print(sock.getsockname()[1], flush=True)
time.sleep(600)
"""


def listening(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, port))
    sock.listen()
    return sock


def targets(host: str) -> frozenset[sockets.IPAddress]:
    return sockets._targets(host, 0)


@pytest.fixture
def other_process() -> Iterator[Callable[[str, int], tuple[int, int]]]:
    """Starts a listener in another process; returns (its pid, its port)."""
    started: list[subprocess.Popen[str]] = []

    def start(host: str, port: int = 0) -> tuple[int, int]:
        proc = subprocess.Popen([sys.executable, "-c", LISTENER, host, str(port)], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        return proc.pid, int(proc.stdout.readline())

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_loopback_connection_may_reach_its_address_and_every_wildcard() -> None:
    ip = ipaddress.ip_address
    loopback = {ip("127.0.0.1"), ip("0.0.0.0"), ip("::"), ip("::ffff:127.0.0.1"), ip("::ffff:0.0.0.0")}
    assert sockets.reachable_by(ip("127.0.0.1")) == loopback
    assert sockets.reachable_by(ip("0.0.0.0")) == loopback  # connecting to the wildcard reaches loopback
    assert sockets.reachable_by(ip("::1")) == {ip("::1"), ip("::")}
    assert {ip("10.0.0.1"), ip("0.0.0.0"), ip("::")} <= sockets.reachable_by(ip("::ffff:10.0.0.1"))


def test_a_host_name_counts_for_every_address_it_resolves_to() -> None:
    assert ipaddress.ip_address("127.0.0.1") in targets("localhost")
    for unresolvable in ("no-such-host.invalid", "a" * 64 + ".invalid"):
        with pytest.raises(BackendError, match="cannot resolve"):
            sockets._targets(unresolvable, 80)


def test_proc_lists_listening_sockets_with_their_inodes() -> None:
    with listening() as v4:
        port = v4.getsockname()[1]
        found = dict(sockets._proc_listeners(port))
        assert found == {ipaddress.ip_address("127.0.0.1"): os.fstat(v4.fileno()).st_ino}
        assert os.fstat(v4.fileno()).st_ino in sockets._socket_inodes([os.getpid()])
    with listening("::") as v6:  # the wildcard exists wherever IPv6 does
        port = v6.getsockname()[1]
        assert dict(sockets._proc_listeners(port)) == {ipaddress.ip_address("::"): os.fstat(v6.fileno()).st_ino}
    with listening() as server, socket.create_connection(server.getsockname()):
        assert len(list(sockets._proc_listeners(server.getsockname()[1]))) == 1  # the listener, not the connection


@pytest.mark.parametrize("check", CHECKS, ids=["proc", "psutil"])
def test_our_own_listener_is_ours_and_nobody_listens_on_a_closed_port(check: Check) -> None:
    me = [os.getpid()]
    with listening() as sock:
        port = sock.getsockname()[1]
        assert check(targets("127.0.0.1"), port, lambda: me) is Ownership.OURS
        assert check(targets("127.0.0.1"), port, lambda: []) is Ownership.FOREIGN
        assert check(targets("127.0.0.2"), port, lambda: me) is Ownership.NOBODY  # another address entirely
    assert check(targets("127.0.0.1"), port, lambda: me) is Ownership.NOBODY


@pytest.mark.parametrize("check", CHECKS, ids=["proc", "psutil"])
def test_another_processs_listener_is_foreign_even_on_a_wildcard(
    check: Check, other_process: Callable[[str, int], tuple[int, int]]
) -> None:
    pid, port = other_process("0.0.0.0", 0)
    assert check(targets("127.0.0.1"), port, lambda: [os.getpid()]) is Ownership.FOREIGN
    assert check(targets("127.0.0.1"), port, lambda: [pid]) is Ownership.OURS
    pid, port = other_process("127.0.0.1", 0)
    assert check(targets("0.0.0.0"), port, lambda: [os.getpid()]) is Ownership.FOREIGN


def test_members_are_only_asked_for_when_someone_listens() -> None:
    def members() -> list[int]:
        raise AssertionError("members computed for a port nobody listens on")

    with listening() as sock:
        port = sock.getsockname()[1]
    assert sockets._ownership_from_proc(targets("127.0.0.1"), port, members) is Ownership.NOBODY


def test_without_root_on_macos_only_our_own_sockets_are_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(kind: str) -> list[object]:
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "net_connections", denied)
    with listening() as sock:
        port = sock.getsockname()[1]
        assert sockets._ownership_from_psutil(targets("127.0.0.1"), port, lambda: [os.getpid()]) is Ownership.OURS
    assert sockets._ownership_from_psutil(targets("127.0.0.1"), port, lambda: [os.getpid()]) is Ownership.NOBODY


def test_a_process_tree_holds_the_process_and_its_descendants() -> None:
    shell = subprocess.Popen(["sh", "-c", "sleep 600 & wait"])
    try:
        tree = wait_until("the shell's child", lambda: len(sockets.process_tree(shell.pid)) == 2, timeout=10)
        assert tree and sockets.process_tree(shell.pid)[0] == shell.pid
    finally:
        for child in psutil.Process(shell.pid).children():
            child.kill()
        shell.kill()
        shell.wait()
    assert sockets.process_tree(shell.pid) == []


@pytest.mark.asyncio
async def test_waiting_ends_when_ours_listens_and_fails_for_a_foreign_listener_or_an_exit(
    other_process: Callable[[str, int], tuple[int, int]],
) -> None:
    async def running() -> int | None:
        return None

    async def exited() -> int | None:
        return 3

    with listening() as sock:
        port = sock.getsockname()[1]
        await sockets.wait_until_served("127.0.0.1", port, lambda: [os.getpid()], running, 5)
    _, taken = other_process("127.0.0.1", 0)
    with pytest.raises(AddressTaken, match=re.escape(f"The address 127.0.0.1:{taken} is already in use")):
        await sockets.wait_until_served("127.0.0.1", taken, lambda: [os.getpid()], exited, 5)
    with pytest.raises(BackendError, match="exited with code 3"):
        await sockets.wait_until_served("127.0.0.1", port, list, exited, 5)
    with pytest.raises(BackendError, match="did not answer within 0 seconds"):
        await sockets.wait_until_served("127.0.0.1", port, list, running, 0.05)


@pytest.mark.asyncio
async def test_waiting_sees_a_listener_that_comes_late() -> None:
    with listening() as probe:
        port = probe.getsockname()[1]

    async def running() -> int | None:
        return None

    waiting = asyncio.create_task(sockets.wait_until_served("127.0.0.1", port, lambda: [os.getpid()], running, 10))
    await asyncio.sleep(0)
    assert not waiting.done()
    with listening(port=port):
        await asyncio.wait_for(waiting, 10)


def test_sock_diag_lists_the_same_listeners_as_proc() -> None:
    diag = sockets._SockDiag()
    try:
        with listening() as v4, listening("::") as v6, socket.create_connection(v4.getsockname()):
            ports = {v4.getsockname()[1], v6.getsockname()[1]}
            found = diag.listeners(ports)
            assert found == sockets._proc_table_listeners(ports)
            assert found[v4.getsockname()[1]] == [(ipaddress.ip_address("127.0.0.1"), os.fstat(v4.fileno()).st_ino)]
            assert found[v6.getsockname()[1]] == [(ipaddress.ip_address("::"), os.fstat(v6.fileno()).st_ino)]
        assert diag.listeners(ports) == {}
    finally:
        diag.close()


async def _wait_for_late_listeners(count: int) -> None:
    """`count` starts wait at once for ports nobody listens on yet; each ends once its port listens."""
    probes = [listening() for _ in range(count)]
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()

    async def running() -> int | None:
        return None

    waiting = [
        asyncio.create_task(sockets.wait_until_served("127.0.0.1", port, lambda: [os.getpid()], running, 10))
        for port in ports
    ]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in waiting)
    late = [listening(port=port) for port in ports]
    try:
        await asyncio.wait_for(asyncio.gather(*waiting), 10)
    finally:
        for sock in late:
            sock.close()


@pytest.mark.asyncio
async def test_many_starts_wait_on_one_look_per_tick() -> None:
    await _wait_for_late_listeners(20)


@pytest.mark.asyncio
async def test_without_netlink_the_proc_tables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> None:
        raise PermissionError("netlink refused")

    monkeypatch.setattr(sockets, "_SockDiag", refused)
    await _wait_for_late_listeners(3)

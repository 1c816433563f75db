"""The server's end of a test's TCP connection, read in the serving process itself: its descriptor is
copied into this process with pidfd_getfd (Linux 5.6+; the servers are this process's descendants, so
the default ptrace policy allows it) and asked with getsockopt, as the server would ask it."""

from __future__ import annotations

import ctypes
import errno
import os
import socket

import psutil

_PIDFD_GETFD = 438  # the same number on every architecture (syscalls added after 5.1 share one table)
_libc = ctypes.CDLL(None, use_errno=True)


def _copy_fd(pidfd: int, fd: int) -> int | None:
    copied = int(_libc.syscall(_PIDFD_GETFD, pidfd, fd, 0))
    if copied >= 0:
        return copied
    error = ctypes.get_errno()
    if error == errno.EBADF:  # closed meanwhile
        return None
    raise OSError(error, f"pidfd_getfd: {os.strerror(error)}")


def _peer(sock: socket.socket) -> object:
    try:
        return sock.getpeername()
    except OSError:  # a listening or unconnected socket
        return None


def server_side_option(server_pid: int, client: socket.socket, level: int, option: int) -> int:
    """getsockopt(level, option) on the socket that `server_pid` (or a process below it, such as a
    gunicorn worker) accepted for `client`'s connection."""
    wanted = client.getsockname()
    seen: list[object] = []
    root = psutil.Process(server_pid)
    for process in [root, *root.children(recursive=True)]:
        pidfd = os.pidfd_open(process.pid)
        try:
            for name in os.listdir(f"/proc/{process.pid}/fd"):
                try:
                    if not os.readlink(f"/proc/{process.pid}/fd/{name}").startswith("socket:"):
                        continue
                except OSError:
                    continue
                copied = _copy_fd(pidfd, int(name))
                if copied is None:
                    continue
                with socket.socket(fileno=copied) as sock:
                    peer = _peer(sock)
                    if sock.type == socket.SOCK_STREAM and peer == wanted:
                        return sock.getsockopt(level, option)
                    seen.append((process.pid, peer))
        finally:
            os.close(pidfd)
    raise AssertionError(
        f"no process of {server_pid} holds the server side of the connection from {wanted}; "
        f"their sockets' peers: {seen}"
    )


def kept_alive_connection(port: int, path: str = "/ping") -> socket.socket:
    """A connection that has had one request answered (so the server has accepted it) and stays open."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: outpost\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = conn.recv(65536)
        assert chunk, f"the server closed the connection: {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return conn


def accepted_nodelay(server_pid: int, port: int, path: str = "/ping") -> bool:
    """Whether the server sets TCP_NODELAY on a kept-alive connection it accepted on `port`."""
    with kept_alive_connection(port, path) as conn:
        return bool(server_side_option(server_pid, conn, socket.IPPROTO_TCP, socket.TCP_NODELAY))

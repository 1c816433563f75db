"""Fixtures for the SSH daemon: a real Redis, client keys, the daemon on a free loopback port, real
target servers, and the real OpenSSH client driven exactly as forwardbasespawner drives it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from outpost.crypto import Crypt
from outpost.settings import Settings, SSHKeyEntry
from outpost.store import Store
from sshd.server import Listener, serve
from tests.sshd.helpers import CRYPT_KEY, USER, ClientKey, Daemon, OpenSSH, OpenSSHFactory, Target


@pytest_asyncio.fixture
async def store(redis: aioredis.Redis) -> Store:
    """The real store on the shared test Redis (flushed after each test by `redis`)."""
    return Store(redis, Crypt([CRYPT_KEY]))


# --- keys and settings ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClientKey]:
    """Keys of hub "a", hub "b", one plain key for every hub, and a stranger's key."""
    workdir = tmp_path_factory.mktemp("client-keys")
    keys = {}
    for name in ("hub_a", "hub_b", "all", "stranger"):
        key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
        path = workdir / name
        key.write_private_key(path)
        path.chmod(0o600)
        keys[name] = ClientKey(path, key.export_public_key().decode().strip())
    return keys


@pytest.fixture
def make_settings(
    make_settings: Callable[..., Settings], tmp_path: Path, client_keys: dict[str, ClientKey]
) -> Callable[..., Settings]:
    """The shared factory, plus the daemon's defaults: loopback, a free port, the test keys."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "crypt_key": CRYPT_KEY,
            "hub_usernames": "a;b",  # the hubs the keys and hubOptions here name
            "hub_passwords": "password-a;password-b",
            "ssh_listen_host": "127.0.0.1",
            "ssh_port": 0,
            "ssh_host_key": tmp_path / "sshd" / "host_key",
            "ssh_public_keys": [
                SSHKeyEntry(hub="a", key=client_keys["hub_a"].public),
                SSHKeyEntry(hub="b", key=client_keys["hub_b"].public),
                client_keys["all"].public,
            ],
        }
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest_asyncio.fixture
async def start_daemon(make_settings: Callable[..., Settings], store: Store) -> AsyncIterator[Daemon]:
    """Start the daemon (settings overrides as keyword arguments); all are closed at teardown."""
    listeners: list[Listener] = []

    async def start(**overrides: Any) -> Listener:
        listener = await serve(make_settings(**overrides), store)
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.close()
        await listener.wait_closed()


@pytest_asyncio.fixture
async def daemon(start_daemon: Daemon) -> Listener:
    return await start_daemon()


# --- target servers ---------------------------------------------------------------------------


@pytest_asyncio.fixture
async def echo_server() -> AsyncIterator[Target]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield Target(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


@pytest_asyncio.fixture
async def http_server() -> AsyncIterator[Target]:
    """Answers every request with 200 and a body naming the request line."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            body = b"hello from " + head.split(b"\r\n", 1)[0]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            if reader.at_eof():
                break
        writer.close()

    async def safe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(safe, "127.0.0.1", 0)
    yield Target(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


# --- the OpenSSH client -----------------------------------------------------------------------


@pytest_asyncio.fixture
async def openssh(client_keys: dict[str, ClientKey]) -> AsyncIterator[OpenSSHFactory]:
    """`openssh(port, key="hub_a", user=USER)`; every master is told to exit at teardown."""
    clients: list[OpenSSH] = []
    # ControlPath must fit a unix socket name (108 bytes): pytest's tmp_path may be too long.
    root = Path(tempfile.mkdtemp(prefix="sshd-", dir="/tmp"))

    def make(port: int, key: str = "hub_a", user: str = USER) -> OpenSSH:
        workdir = root / str(len(clients))
        workdir.mkdir()
        client = OpenSSH(port, client_keys[key].path, workdir, user)
        clients.append(client)
        return client

    yield make
    for client in clients:
        if client.control_path.exists():
            await client.mux("exit")
    shutil.rmtree(root, ignore_errors=True)

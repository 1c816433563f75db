"""Who may connect, and what a connected key may do besides local forwards (nothing)."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from outpost.settings import Settings
from outpost.store import Store
from sshd.keys import load_host_key
from sshd.server import ForwardOnlyServer, Listener, Policy
from tests.sshd.helpers import USER, ClientKey, Daemon, OpenSSHFactory, Target, started, until


@pytest.mark.asyncio
@pytest.mark.parametrize(("key", "user"), [("stranger", "jhuboutpost"), ("hub_a", "root")])
async def test_unknown_key_or_user_is_refused(daemon: Listener, openssh: OpenSSHFactory, key: str, user: str) -> None:
    """A key that is not authorized, or an authorized key for another login name, cannot log in."""
    client = openssh(daemon.port, key, user)
    result = await client.start_master()
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    assert (await client.mux("check")).returncode != 0


@pytest.mark.asyncio
async def test_only_public_key_auth_is_offered(daemon: Listener, openssh: OpenSSHFactory) -> None:
    """Asking for password or keyboard-interactive gets "publickey" as the only method on offer."""
    client = openssh(daemon.port, "stranger")
    result = await client.run(
        *client.options("-oPreferredAuthentications=password,keyboard-interactive", multiplex=False),
        "-T", client.destination, "true",
    )  # fmt: skip
    assert result.returncode == 255
    assert "Permission denied (publickey)." in result.stderr


@pytest.mark.asyncio
@pytest.mark.parametrize("multiplex", [False, True], ids=["own-connection", "through-master"])
@pytest.mark.parametrize(
    ("flags", "command"),
    [(["-T"], []), (["-T"], ["echo", "pwned"]), (["-s"], ["sftp"])],
    ids=["shell", "exec", "sftp"],
)
async def test_sessions_are_refused(
    daemon: Listener, openssh: OpenSSHFactory, flags: list[str], command: list[str], multiplex: bool
) -> None:
    """A shell, a command or a subsystem needs a session channel, which is never opened."""
    client = await started(openssh, daemon) if multiplex else openssh(daemon.port)
    result = await client.run(*client.options(multiplex=multiplex), *flags, client.destination, *command)
    assert result.returncode == 255, result
    assert "Session refused" in result.stderr
    assert "pwned" not in result.stdout


@pytest.mark.asyncio
async def test_remote_forward_is_refused(daemon: Listener, openssh: OpenSSHFactory, echo_server: Target) -> None:
    """-R would let a key holder listen inside the outpost's network: refused."""
    client = await started(openssh, daemon)
    result = await client.mux("forward", f"-R127.0.0.1:0:127.0.0.1:{echo_server.port}")
    assert result.returncode != 0
    assert "remote port forwarding failed" in result.stderr


@pytest.mark.asyncio
async def test_host_key_survives_a_restart(
    start_daemon: Daemon,
    make_settings: Callable[..., Settings],
    openssh: OpenSSHFactory,
) -> None:
    """The host key is generated once (0600) and reused: the hub's pinned key still matches."""
    first = await start_daemon()
    client = openssh(first.port)
    assert (await client.start_master()).returncode == 0
    pinned = client.known_hosts.read_text()
    assert (await client.mux("exit")).returncode == 0

    first.close()
    await first.wait_closed()
    second = await start_daemon(ssh_port=first.port)
    assert second.host_key_fingerprint == first.host_key_fingerprint

    result = await client.start_master()
    assert result.returncode == 0, result.stderr
    assert client.known_hosts.read_text() == pinned
    key_file = make_settings().ssh_host_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


@pytest.mark.asyncio
async def test_a_new_host_key_would_be_noticed(
    start_daemon: Daemon,
    make_settings: Callable[..., Settings],
    openssh: OpenSSHFactory,
) -> None:
    """Control for the test above: with the key file gone, the hub's client refuses the server."""
    first = await start_daemon()
    client = openssh(first.port)
    assert (await client.start_master()).returncode == 0
    assert (await client.mux("exit")).returncode == 0
    first.close()
    await first.wait_closed()

    make_settings().ssh_host_key.unlink()
    second = await start_daemon(ssh_port=first.port)
    assert second.host_key_fingerprint != first.host_key_fingerprint
    result = await client.start_master()
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_host_key_file_is_reused_not_rewritten(tmp_path: Path) -> None:
    """The first call writes the key 0600; later calls read the same key and leave the file alone."""
    path = tmp_path / "keys" / "host_key"
    key = load_host_key(path)
    written = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_host_key(path).get_fingerprint() == key.get_fingerprint()
    assert path.read_bytes() == written
    assert [p.name for p in path.parent.iterdir()] == ["host_key"]  # no temporary file left behind


@pytest.mark.asyncio
async def test_connections_per_key_are_capped(
    start_daemon: Daemon, openssh: OpenSSHFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With a cap of 1, a key's second connection is refused until its first one closes."""
    caplog.set_level(logging.INFO, logger="sshd")
    daemon = await start_daemon(ssh_max_connections_per_key=1)
    first = await started(openssh, daemon, key="hub_a")
    second = openssh(daemon.port, "hub_a")
    assert (await second.start_master()).returncode == 255
    assert "already 1 connections with this key" in caplog.text
    await started(openssh, daemon, key="hub_b")  # the cap is per key

    assert (await first.mux("exit")).returncode == 0
    await until(lambda: "connection closed" in caplog.text, what="the daemon to see the first master go")
    assert (await second.start_master()).returncode == 0
    assert (await second.mux("check")).returncode == 0


@pytest.mark.asyncio
async def test_public_key_queries_do_not_fill_the_cap(
    make_settings: Callable[..., Settings], client_keys: dict[str, ClientKey], store: Store
) -> None:
    """Public keys are public: asking "would you take this key?" without the private key must not
    count against the cap, or anyone could lock a hub out."""
    policy = Policy(make_settings(ssh_max_connections_per_key=1), store)
    key = asyncssh.import_public_key(client_keys["hub_a"].public)
    for _ in range(5):
        assert ForwardOnlyServer(policy).validate_public_key(USER, key)
    assert policy.connections.count(key.get_fingerprint()) == 0

"""authorized_keys options on `sshPublicKeys` entries, with the real OpenSSH client: the upstream docs'
option-prefixed key, `from=`, `permitopen=`, forwarding flags and `expiry-time=`."""

from __future__ import annotations

import logging

import pytest

from outpost.settings import SSHKeyEntry
from outpost.store import Store
from sshd.server import Listener
from tests.sshd.helpers import (
    ClientKey,
    Daemon,
    OpenSSHFactory,
    Target,
    exchange,
    forward,
    forward_lines,
    run_service,
    started,
    until,
)

UPSTREAM_OPTIONS = 'restrict,port-forwarding,command="/bin/echo No commands allowed"'


def keyed(client_keys: dict[str, ClientKey], options: str, hub: str | None = "a") -> list[str | SSHKeyEntry]:
    """hub_a's key with `options`, for hub `hub` (a plain line when None)."""
    line = f"{options} {client_keys['hub_a'].public}"
    return [line if hub is None else SSHKeyEntry(hub=hub, key=line)]


async def refused_login(openssh: OpenSSHFactory, daemon: Listener) -> None:
    client = openssh(daemon.port)
    result = await client.start_master()
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


@pytest.mark.asyncio
@pytest.mark.parametrize("hub", [None, "a"], ids=["plain-line", "hub-entry"])
async def test_the_upstream_docs_key_logs_in_and_forwards(
    start_daemon: Daemon,
    openssh: OpenSSHFactory,
    client_keys: dict[str, ClientKey],
    store: Store,
    echo_server: Target,
    caplog: pytest.LogCaptureFixture,
    hub: str | None,
) -> None:
    """`restrict,port-forwarding,command="..."` as the upstream docs write it: forwards work; the start-up log
    names the key's fingerprint, hub and options, never the key."""
    caplog.set_level(logging.INFO, logger="sshd")
    daemon = await start_daemon(ssh_public_keys=keyed(client_keys, UPSTREAM_OPTIONS, hub))
    await run_service(store, "a", "lab", echo_server.address)
    client = await started(openssh, daemon)
    assert await exchange(await forward(client, echo_server), b"ping") == b"ping"
    (described,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("authorized ")]
    assert f"hub={hub or '*'} options=restrict,port-forwarding,command" in described
    assert client_keys["hub_a"].public.split()[1] not in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize("pattern", ["10.0.0.0/8", "*,!127.0.0.1", "localhost"])
async def test_a_key_from_elsewhere_is_refused_at_login(
    start_daemon: Daemon,
    openssh: OpenSSHFactory,
    client_keys: dict[str, ClientKey],
    caplog: pytest.LogCaptureFixture,
    pattern: str,
) -> None:
    """The client comes from 127.0.0.1: a `from=` that does not match it (a CIDR, a negation, a name,
    which is never looked up) refuses the login, and the daemon says why."""
    caplog.set_level(logging.INFO, logger="sshd")
    daemon = await start_daemon(ssh_public_keys=keyed(client_keys, f'from="{pattern}",{UPSTREAM_OPTIONS}'))
    await refused_login(openssh, daemon)
    assert "reason=from-mismatch" in caplog.text


@pytest.mark.asyncio
async def test_a_matching_from_logs_in(
    start_daemon: Daemon, openssh: OpenSSHFactory, client_keys: dict[str, ClientKey], store: Store, echo_server: Target
) -> None:
    daemon = await start_daemon(ssh_public_keys=keyed(client_keys, 'from="10.0.0.0/8,127.0.0.0/8,!127.0.0.2"'))
    await run_service(store, "a", "lab", echo_server.address)
    client = await started(openssh, daemon)
    assert await exchange(await forward(client, echo_server), b"ping") == b"ping"


@pytest.mark.asyncio
async def test_permitopen_narrows_the_hub_rule(
    start_daemon: Daemon,
    openssh: OpenSSHFactory,
    client_keys: dict[str, ClientKey],
    store: Store,
    echo_server: Target,
    http_server: Target,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two running services of hub a; permitopen names only the echo server: the other is refused.
    permitopen naming hub b's service does not open it to hub a's key."""
    caplog.set_level(logging.INFO, logger="sshd")
    await run_service(store, "a", "lab", echo_server.address)
    await run_service(store, "a", "web", http_server.address)
    opens = f'permitopen="{echo_server.address}",permitopen="127.0.0.1:{http_server.port}"'
    daemon = await start_daemon(ssh_public_keys=keyed(client_keys, f'permitopen="{echo_server.address}"'))
    client = await started(openssh, daemon)
    assert await exchange(await forward(client, echo_server), b"ping") == b"ping"
    assert await exchange(await forward(client, http_server), b"GET / HTTP/1.1\r\n\r\n") == b""
    await until(lambda: "reason=key-options" in caplog.text, what="the refusal's log line")

    other = await run_service(store, "b", "lab", "127.0.0.1:1")  # hub b's service, named in permitopen below
    daemon = await start_daemon(ssh_public_keys=keyed(client_keys, f'{opens},permitopen="127.0.0.1:1"'))
    client = await started(openssh, daemon)
    assert await exchange(await forward(client, http_server), b"GET / HTTP/1.1\r\n\r\n") != b""
    local = await forward(client, Target(1))
    assert await exchange(local, b"x") == b""
    await until(lambda: "reason=other-hub" in caplog.text, what="the other hub's refusal")
    assert other.hub == "b"


@pytest.mark.asyncio
@pytest.mark.parametrize("options", ["restrict", "no-port-forwarding", "port-forwarding,restrict"])
async def test_no_forwarding_logs_in_but_forwards_nothing(
    start_daemon: Daemon,
    openssh: OpenSSHFactory,
    client_keys: dict[str, ClientKey],
    store: Store,
    echo_server: Target,
    caplog: pytest.LogCaptureFixture,
    options: str,
) -> None:
    caplog.set_level(logging.INFO, logger="sshd")
    await run_service(store, "a", "lab", echo_server.address)
    daemon = await start_daemon(ssh_public_keys=keyed(client_keys, options))
    client = await started(openssh, daemon)
    assert await exchange(await forward(client, echo_server), b"ping") == b""
    await until(lambda: bool(forward_lines(caplog, "refused")), what="the refusal's log line")
    assert "reason=key-options" in forward_lines(caplog, "refused")[0]
    assert not forward_lines(caplog, "opened")


@pytest.mark.asyncio
async def test_an_expired_key_is_refused(
    start_daemon: Daemon, openssh: OpenSSHFactory, client_keys: dict[str, ClientKey], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sshd")
    daemon = await start_daemon(ssh_public_keys=keyed(client_keys, f'expiry-time="20200101",{UPSTREAM_OPTIONS}'))
    await refused_login(openssh, daemon)
    assert "reason=key-expired" in caplog.text

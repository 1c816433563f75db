"""Authorized keys -> hubs and what their options allow, and the host key; then the options on
`sshPublicKeys` entries honoured end to end with the real OpenSSH client: the upstream docs'
option-prefixed key, `from=`, `permitopen=`, forwarding flags and `expiry-time=`."""

from __future__ import annotations

import datetime
import logging
import stat
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from outpost.errors import ConfigurationError
from outpost.settings import Settings, SSHKeyEntry
from outpost.store import Store
from sshd.keys import AuthorizedKeys, Grant, KeyRefusal, load_host_key
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

CLIENT = "127.0.0.1"
UPSTREAM_OPTIONS = 'restrict,port-forwarding,command="/bin/echo No commands allowed"'


def public_line(comment: str = "") -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or None)
    return key, key.export_public_key().decode().strip()


def test_plain_key_reaches_every_hub_and_entries_name_one() -> None:
    """A plain line (the seed's format) grants all hubs; `{hub, key}` grants that hub only."""
    plain, plain_line = public_line("hub@example.org")
    scoped, scoped_line = public_line()
    stranger, _ = public_line()
    keys = AuthorizedKeys([plain_line, SSHKeyEntry(hub="a", key=scoped_line)])

    grant = keys.grant_for(plain, CLIENT)
    assert isinstance(grant, Grant) and grant.allows("anyone", CLIENT, 80) and grant.describe() == "*"
    grant = keys.grant_for(scoped, CLIENT)
    assert isinstance(grant, Grant) and grant.describe() == "a"
    assert grant.allows("a", CLIENT, 80) and not grant.allows("b", CLIENT, 80)
    assert grant.fingerprint == scoped.get_fingerprint()
    assert keys.grant_for(stranger, CLIENT) is KeyRefusal.UNKNOWN


def test_a_key_listed_twice_gets_the_union() -> None:
    """Two hub entries for one key grant both hubs; a plain line for it grants every hub."""
    key, line = public_line()
    grant = AuthorizedKeys([SSHKeyEntry(hub="a", key=line), SSHKeyEntry(hub="b", key=line)]).grant_for(key, CLIENT)
    assert isinstance(grant, Grant) and grant.describe() == "a,b"
    grant = AuthorizedKeys([SSHKeyEntry(hub="a", key=line), line]).grant_for(key, CLIENT)
    assert isinstance(grant, Grant) and grant.describe() == "*"


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "ssh-ed25519",
        "not a key",
        "ssh-ed25519 AAAAnotbase64!",
        'restrict,command="unbalanced ssh-ed25519 AAAA',
        "restrict,port-forwarding",
    ],
)
def test_a_bad_entry_is_a_configuration_error(entry: str) -> None:
    _, good = public_line()
    with pytest.raises(ConfigurationError, match=r"sshPublicKeys\[1\]: not an authorized_keys line"):
        AuthorizedKeys([good, SSHKeyEntry(hub="a", key=entry)])


@pytest.mark.parametrize(
    "options,message",
    [
        ("form=10.0.0.1", "unsupported option"),  # a misspelt from= must not silently allow every address
        ("cert-authority", "unsupported option"),  # a CA, not a key
        ("verify-required", "unsupported option"),
        ('permitopen="nohost"', "permitopen"),
        ('expiry-time="2026"', "expiry-time"),
        ('expiry-time="20261301"', "month"),
    ],
)
def test_options_we_cannot_honour_are_refused(options: str, message: str) -> None:
    _, line = public_line()
    with pytest.raises(ConfigurationError, match=rf"sshPublicKeys\[0\]: .*{message}"):
        AuthorizedKeys([f"{options} {line}"])


@pytest.mark.parametrize("plain", [True, False])
def test_upstream_docs_key_forwards(plain: bool) -> None:
    """The upstream docs' line (`restrict,port-forwarding,command=...`) may forward, in both entry forms."""
    key, line = public_line("jupyterhub")
    entry = f"{UPSTREAM_OPTIONS} {line}"
    grant = AuthorizedKeys([entry if plain else SSHKeyEntry(hub="a", key=entry)]).grant_for(key, CLIENT)
    assert isinstance(grant, Grant) and grant.permits("10.0.0.5", 8080) and grant.allows("a", "10.0.0.5", 8080)


@pytest.mark.parametrize(
    "options,forwards",
    [
        ("restrict", False),
        ("no-port-forwarding", False),
        ("restrict,port-forwarding", True),
        ("port-forwarding,restrict", False),
        ("no-port-forwarding,port-forwarding", True),
        # The last flag wins, as in OpenSSH: asyncssh's dict keeps only each flag's first place.
        ("no-port-forwarding,port-forwarding,no-port-forwarding", False),
        ("restrict,port-forwarding,restrict", False),
        ("port-forwarding,no-port-forwarding,port-forwarding", True),
        ("restrict,no-port-forwarding,port-forwarding", True),
        ('no-pty,no-X11-forwarding,no-agent-forwarding,pty,tunnel="0",environment="A=b"', True),
    ],
)
def test_forwarding_flags_in_order(options: str, forwards: bool) -> None:
    key, line = public_line()
    grant = AuthorizedKeys([f"{options} {line}"]).grant_for(key, CLIENT)
    assert isinstance(grant, Grant) and grant.permits(CLIENT, 22) is forwards


@pytest.mark.parametrize(
    "pattern,client,allowed",
    [
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", CLIENT, False),
        ("10.0.0.0/8,!10.1.2.3", "10.1.2.3", False),
        ("10.0.0.0/8,!10.1.2.3", "10.1.2.4", True),
        ("127.0.0.*", CLIENT, True),
        ("*,!127.0.0.1", CLIENT, False),
        ("2001:db8::/32", "2001:db8::7", True),
        ("hub.example.org", CLIENT, False),  # no reverse lookup: names never match an address
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),  # an IPv4 client of a dual-stack listener
        ("10.0.0.0/8,!10.1.2.3", "::ffff:10.1.2.3", False),
        ("10.0.0.0/8", "", False),  # no peer address known: a pinned key is refused
    ],
)
def test_from_patterns(pattern: str, client: str, allowed: bool) -> None:
    key, line = public_line()
    grant = AuthorizedKeys([f'from="{pattern}" {line}']).grant_for(key, client)
    assert isinstance(grant, Grant) if allowed else grant is KeyRefusal.FROM


def test_a_key_listed_twice_gets_only_what_the_matching_entries_allow() -> None:
    """Hub a's entry from 10/8, hub b's from anywhere: from 10/8 both hubs, from elsewhere only b."""
    key, line = public_line()
    keys = AuthorizedKeys([SSHKeyEntry(hub="a", key=f'from="10.0.0.0/8" {line}'), SSHKeyEntry(hub="b", key=line)])
    inside, outside = keys.grant_for(key, "10.0.0.1"), keys.grant_for(key, CLIENT)
    assert isinstance(inside, Grant) and inside.describe() == "a,b"
    assert isinstance(outside, Grant) and outside.describe() == "b"


def test_permitopen_narrows_per_entry() -> None:
    """permitopen is an extra condition on the entry's hub rule, never a new allowance."""
    key, line = public_line()
    keys = AuthorizedKeys([SSHKeyEntry(hub="a", key=f'permitopen="10.0.0.5:8080",permitopen="10.0.0.6:*" {line}')])
    grant = keys.grant_for(key, CLIENT)
    assert isinstance(grant, Grant)
    assert grant.allows("a", "10.0.0.5", 8080) and grant.allows("a", "10.0.0.6", 1)
    assert not grant.permits("10.0.0.5", 8081) and not grant.allows("b", "10.0.0.5", 8080)


def test_expiry_time() -> None:
    key, line = public_line()
    keys = AuthorizedKeys([f'expiry-time="202601021200Z" {line}'])
    before = datetime.datetime(2026, 1, 2, 11, 59, tzinfo=datetime.UTC)
    after = datetime.datetime(2026, 1, 2, 12, 0, tzinfo=datetime.UTC)
    assert isinstance(keys.grant_for(key, CLIENT, before), Grant)
    assert keys.grant_for(key, CLIENT, after) is KeyRefusal.EXPIRED


def test_the_start_up_description_names_fingerprint_hub_and_options_not_the_key() -> None:
    key, line = public_line("alice@example.org")
    options = f'{UPSTREAM_OPTIONS},from="10.0.0.0/8",permitopen="10.0.0.5:*",environment="TOKEN=s3cret"'
    (described,) = AuthorizedKeys([SSHKeyEntry(hub="a", key=f"{options} {line}")]).describe()
    assert described == (
        f"sshPublicKeys[0] key={key.get_fingerprint()} hub=a options=restrict,port-forwarding,command,"
        'from="10.0.0.0/8",permitopen="10.0.0.5:*",environment forwarding=yes'
    )
    assert line.split()[1] not in described and "s3cret" not in described and "echo" not in described


def test_the_start_up_description_keeps_every_option_in_order() -> None:
    """A repeated option is logged where each one was written, with what the flags add up to."""
    key, line = public_line()
    options = 'permitopen="10.0.0.5:1",restrict,port-forwarding,permitopen="10.0.0.6:2",restrict'
    (described,) = AuthorizedKeys([f"{options} {line}"]).describe()
    assert described.endswith(
        'options=permitopen="10.0.0.5:1",restrict,port-forwarding,permitopen="10.0.0.6:2",restrict forwarding=no'
    )


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

"""Authorized keys -> hubs and what their options allow, and the per-key connection counter."""

from __future__ import annotations

import datetime

import asyncssh
import pytest

from outpost.errors import ConfigurationError
from outpost.settings import SSHKeyEntry
from sshd.keys import AuthorizedKeys, Grant, KeyRefusal
from sshd.limits import ConnectionCounter

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
        'from="10.0.0.0/8",permitopen="10.0.0.5:*",environment'
    )
    assert line.split()[1] not in described and "s3cret" not in described and "echo" not in described


def test_connection_counter() -> None:
    counter = ConnectionCounter(limit=2)
    first, second, third = object(), object(), object()
    assert counter.claim("k", first) and counter.claim("k", first)  # asyncssh validates a key twice
    assert counter.claim("k", second)
    assert not counter.claim("k", third)
    assert counter.claim("other", third)
    counter.release("k", first)
    assert counter.count("k") == 1
    assert counter.claim("k", third)
    counter.release("k", second)
    counter.release("k", third)
    counter.release("k", third)
    assert counter.count("k") == 0

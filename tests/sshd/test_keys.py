"""Authorized keys -> hubs, and the per-key connection counter."""

from __future__ import annotations

import asyncssh
import pytest

from outpost.errors import ConfigurationError
from outpost.settings import SSHKeyEntry
from sshd.keys import AuthorizedKeys
from sshd.limits import ConnectionCounter


def public_line(comment: str = "") -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or None)
    return key, key.export_public_key().decode().strip()


def test_plain_key_reaches_every_hub_and_entries_name_one() -> None:
    """A plain line (the seed's format) grants all hubs; `{hub, key}` grants that hub only."""
    plain, plain_line = public_line("hub@example.org")
    scoped, scoped_line = public_line()
    stranger, _ = public_line()
    keys = AuthorizedKeys([plain_line, SSHKeyEntry(hub="a", key=scoped_line)])

    grant = keys.grant_for(plain)
    assert grant is not None and grant.hubs is None and grant.allows("anyone")
    grant = keys.grant_for(scoped)
    assert grant is not None and grant.hubs == {"a"}
    assert grant.allows("a") and not grant.allows("b")
    assert grant.fingerprint == scoped.get_fingerprint()
    assert keys.grant_for(stranger) is None


def test_a_key_listed_twice_gets_the_union() -> None:
    """Two hub entries for one key grant both hubs; a plain line for it grants every hub."""
    key, line = public_line()
    grant = AuthorizedKeys([SSHKeyEntry(hub="a", key=line), SSHKeyEntry(hub="b", key=line)]).grant_for(key)
    assert grant is not None and grant.hubs == {"a", "b"}
    grant = AuthorizedKeys([SSHKeyEntry(hub="a", key=line), line]).grant_for(key)
    assert grant is not None and grant.hubs is None


@pytest.mark.parametrize("entry", ["", "ssh-ed25519", "not a key", "ssh-ed25519 AAAAnotbase64!"])
def test_a_bad_entry_is_a_configuration_error(entry: str) -> None:
    _, good = public_line()
    with pytest.raises(ConfigurationError, match=r"sshPublicKeys\[1\]"):
        AuthorizedKeys([good, SSHKeyEntry(hub="a", key=entry)])


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

"""Stored records under Fernet with key rotation: the first key encrypts, every configured key decrypts.

tests/fuzz/test_parsers.py checks the same promises over generated values and keys; these are the
rotation an administrator walks through, step by step."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from outpost.crypto import Crypt
from outpost.errors import ConfigurationError, UndecryptableRecord

OLD, NEW, OTHER = (Fernet.generate_key().decode() for _ in range(3))
RECORD = {"env": {"JUPYTERHUB_API_TOKEN": "secret-token"}, "port": 8888, "ok": True, "none": None}


def test_a_record_round_trips_and_is_not_stored_in_clear() -> None:
    crypt = Crypt([OLD])
    token = crypt.encrypt_json(RECORD)
    assert b"secret-token" not in token and b"JUPYTERHUB" not in token
    assert crypt.decrypt_json(token) == RECORD
    assert crypt.decrypt_json(token.decode()) == RECORD  # Redis may hand back str or bytes


def test_a_record_written_under_the_old_key_is_read_after_a_new_primary_is_added() -> None:
    written = Crypt([OLD]).encrypt_json(RECORD)
    rotating = Crypt([NEW, OLD])  # the new key first: it encrypts, the old one still decrypts
    assert rotating.decrypt_json(written) == RECORD
    assert not rotating.readable_by_first_key(written)

    fresh = rotating.encrypt_json(RECORD)
    assert rotating.readable_by_first_key(fresh)
    assert Crypt([NEW]).decrypt_json(fresh) == RECORD
    with pytest.raises(UndecryptableRecord):
        Crypt([OLD]).decrypt_json(fresh)  # written under the new primary, not the old key


def test_rotate_rewrites_under_the_first_key_so_the_old_key_can_go() -> None:
    written = Crypt([OLD]).encrypt_json(RECORD)
    rotated = Crypt([NEW, OLD]).rotate(written)
    assert Crypt([NEW]).decrypt_json(rotated) == RECORD  # the old key is no longer needed
    with pytest.raises(UndecryptableRecord):
        Crypt([OLD]).decrypt_json(rotated)


def test_the_order_of_the_keys_decides_which_one_encrypts() -> None:
    token = Crypt([OLD, NEW]).encrypt_json(RECORD)
    assert Crypt([OLD]).decrypt_json(token) == RECORD
    with pytest.raises(UndecryptableRecord):
        Crypt([NEW]).decrypt_json(token)
    assert Crypt([OLD, NEW]).readable_by_first_key(token) and not Crypt([NEW, OLD]).readable_by_first_key(token)


@pytest.mark.parametrize("token", [b"", b"not a token", "gAAAAAB-truncated", Crypt([OTHER]).encrypt_json(RECORD)])
def test_a_record_no_configured_key_can_read_is_undecryptable(token: bytes | str) -> None:
    crypt = Crypt([NEW, OLD])
    with pytest.raises(UndecryptableRecord) as caught:
        crypt.decrypt_json(token)
    assert caught.value.status == 409 and "cannot be decrypted" in caught.value.message
    with pytest.raises(UndecryptableRecord):
        crypt.decrypt_json(token, cached=True)
    with pytest.raises(UndecryptableRecord):
        crypt.rotate(token)


def test_a_token_that_decrypts_to_something_other_than_json_is_undecryptable() -> None:
    token = Fernet(OLD.encode()).encrypt(b"\xff not json")
    with pytest.raises(UndecryptableRecord):
        Crypt([OLD]).decrypt_json(token)


def test_cached_reads_give_each_caller_its_own_copy() -> None:
    crypt = Crypt([OLD])
    token = crypt.encrypt_json(RECORD)
    first = crypt.decrypt_json(token, cached=True)
    first["env"]["JUPYTERHUB_API_TOKEN"] = "changed by one reader"
    assert crypt.decrypt_json(token, cached=True) == RECORD


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param([], "no encryption key configured", id="none"),
        pytest.param(["not-a-key"], "url-safe base64 Fernet keys", id="garbage"),
        pytest.param([NEW, "c2hvcnQ="], "url-safe base64 Fernet keys", id="one-bad-among-good"),
    ],
)
def test_bad_keys_are_a_configuration_error_that_does_not_echo_them(keys: list[str], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Crypt(keys)
    assert message in caught.value.message
    assert all(key not in caught.value.message for key in keys)

"""Fernet encryption of stored records, with key rotation: the first key encrypts, all decrypt."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from outpost.errors import ConfigurationError, UndecryptableRecord

PLAINTEXT_CACHE = 16384  # decrypted records kept per process for `decrypt_json(..., cached=True)`


class Crypt:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigurationError("no encryption key configured (OUTPOST_CRYPT_KEY)")
        try:
            self._fernets = [Fernet(key) for key in keys]
        except (ValueError, TypeError):
            raise ConfigurationError(
                "OUTPOST_CRYPT_KEY must hold url-safe base64 Fernet keys (32 bytes each)"
            ) from None
        self._fernet = MultiFernet(self._fernets)
        # A token always decrypts to the same bytes, so a record read again and again (a running
        # server's state, polled every 30 s) is decrypted once; each read still parses its own copy.
        self._cached_plaintext = functools.lru_cache(maxsize=PLAINTEXT_CACHE)(self._plaintext)

    def encrypt_json(self, value: Any) -> bytes:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode())

    def _plaintext(self, token: bytes | str) -> bytes:
        return self._fernet.decrypt(token)

    def decrypt_json(self, token: bytes | str, *, cached: bool = False) -> Any:
        try:
            return json.loads((self._cached_plaintext if cached else self._plaintext)(token))
        except (InvalidToken, ValueError, TypeError):
            raise UndecryptableRecord() from None

    def readable_by_first_key(self, token: bytes | str) -> bool:
        try:
            self._fernets[0].decrypt(token)
            return True
        except InvalidToken:
            return False

    def rotate(self, token: bytes | str) -> bytes:
        """Re-encrypt under the first key (used by `outpost rotate-key`)."""
        try:
            return self._fernet.rotate(token)
        except (InvalidToken, ValueError, TypeError):
            raise UndecryptableRecord() from None

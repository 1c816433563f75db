"""Fernet encryption of stored records, with key rotation: the first key encrypts, all decrypt."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from outpost.errors import ConfigurationError, UndecryptableRecord


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

    def encrypt_json(self, value: Any) -> bytes:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode())

    def decrypt_json(self, token: bytes | str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(token))
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

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
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError):
            raise ConfigurationError(
                "OUTPOST_CRYPT_KEY must hold url-safe base64 Fernet keys (32 bytes each)"
            ) from None

    def encrypt_json(self, value: Any) -> bytes:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode())

    def decrypt_json(self, token: bytes | str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(token))
        except (InvalidToken, ValueError, TypeError):
            raise UndecryptableRecord() from None

    def rotate(self, token: bytes | str) -> bytes:
        """Re-encrypt under the first key (used by `outpost rotate-key`)."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise UndecryptableRecord() from None

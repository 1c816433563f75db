"""HTTP Basic authentication of hubs: the credential's user name is the hub's identity."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from outpost.errors import Unauthorized

# Compared against when the user name is unknown, so timing does not reveal valid hub names.
_NO_SUCH_HUB = "\x00" * 32


def authenticate(authorization: str | None, credentials: Mapping[str, str]) -> str:
    """Return the hub name for a valid `Authorization: Basic ...` header, else raise Unauthorized."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    hub, sep, password = decoded.partition(":")
    expected = credentials.get(hub)
    matches = hmac.compare_digest(password.encode(), (expected if expected is not None else _NO_SUCH_HUB).encode())
    if not sep or expected is None or not matches:
        raise Unauthorized("wrong hub name or password")
    return hub

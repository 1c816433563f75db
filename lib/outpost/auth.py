"""HTTP Basic authentication of hubs (the credential's user name is the hub's identity), and the
metrics scraper's bearer token."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping

from outpost.errors import MetricsOff, ScraperUnauthorized, Unauthorized
from outpost.ratelimit import LoginGuard

# Compared against when the user name is unknown, so timing does not reveal valid hub names.
_NO_SUCH_HUB = "\x00" * 32
# Far above any real credential; longer headers are refused before they are decoded.
MAX_AUTHORIZATION_CHARS = 4096
VERIFIED_HEADERS = 1024  # headers remembered per process: a few per hub (one per hub in practice)


class HubLogins:
    """The hubs' credentials, and per process the Authorization headers that proved one: a hub's next
    polls skip decoding and comparing. Only a header that verified is remembered (every wrong password
    is compared and counted), and only with the password it proved: once the hub's password is another,
    the header is checked again, and fails."""

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self.credentials = credentials
        self._verified: dict[str, tuple[str, str]] = {}  # header -> (hub, the password it carried)

    def known(self, authorization: str) -> str | None:
        """The hub this exact header proved, while that hub's password is still the one it carried."""
        entry = self._verified.get(authorization)
        if entry is None or self.credentials.get(entry[0]) != entry[1]:
            return None
        return entry[0]

    def remember(self, authorization: str, hub: str, password: str) -> None:
        if len(self._verified) >= VERIFIED_HEADERS:  # only verified headers get here: a hub's few
            self._verified.clear()
        self._verified[authorization] = (hub, password)


def parse_basic(authorization: str | None) -> tuple[str, str]:
    """(hub, password) from an `Authorization: Basic ...` header; Unauthorized if it is not one."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized()
    if len(encoded) > MAX_AUTHORIZATION_CHARS:
        raise Unauthorized("malformed Basic credentials")
    try:
        # ValueError covers binascii.Error and a header that is not ASCII (HTTP gives latin-1 text).
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # UnicodeDecodeError is one too
        raise Unauthorized("malformed Basic credentials") from None
    hub, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("malformed Basic credentials")
    return hub, password


def verify(hub: str, password: str, credentials: Mapping[str, str]) -> bool:
    """Constant-time comparison, also for unknown hub names."""
    expected = credentials.get(hub)
    matches = hmac.compare_digest(password.encode(), (expected if expected is not None else _NO_SUCH_HUB).encode())
    return expected is not None and matches


async def authenticate(authorization: str | None, source: str, logins: HubLogins, guard: LoginGuard) -> str:
    """The hub name for valid credentials. The comparison is local (or skipped for a header that proved a hub
    before, `HubLogins`) and its answer leaves only once the guard has counted a failure (one script) or found
    the source not blocked (one read): no guess is answered beyond the source's budget, a blocked source is
    refused even with a header that proved a hub (within a second, `LoginGuard.admit`), and right credentials
    cost one round trip (a header that proved itself, one a second per source)."""
    hub = logins.known(authorization) if authorization else None
    if hub is not None:
        await guard.admit(source, known=True)
        return hub
    hub, password = parse_basic(authorization)
    if verify(hub, password, logins.credentials):
        await guard.admit(source)
        assert authorization is not None  # parse_basic refuses a missing header
        logins.remember(authorization, hub, password)
        return hub
    await guard.fail(source, hub)
    raise Unauthorized("wrong hub name or password")


async def authenticate_scraper(authorization: str | None, source: str, token: str | None, guard: LoginGuard) -> None:
    """`Authorization: Bearer <token>` for /metrics; a wrong token is a failed login of the source."""
    if token is None:
        raise MetricsOff()
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip() or len(given) > MAX_AUTHORIZATION_CHARS:
        raise ScraperUnauthorized()  # nothing guessed: not counted, as a malformed Basic header
    if hmac.compare_digest(given.strip().encode(), token.encode()):
        await guard.admit(source)
        return
    await guard.fail(source, None)
    raise ScraperUnauthorized("wrong metrics token")

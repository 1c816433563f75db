"""HTTP Basic authentication of hubs: the header's parsing, the password check, and failed logins
counted against the source (with a real Redis behind the login guard)."""

from __future__ import annotations

import base64

import pytest
import redis.asyncio as aioredis

from outpost.auth import MAX_AUTHORIZATION_CHARS, HubLogins, authenticate, parse_basic, verify
from outpost.errors import TooManyAttempts, Unauthorized
from outpost.ratelimit import LoginGuard, LoginLimits
from outpost.store.logins import LoginCounters

CREDENTIALS = {"hubA": "password-a", "hübB": "pässwörd", "hubC": "a:b:c"}
SOURCE = "198.51.100.7"
on_loop = pytest.mark.asyncio(loop_scope="session")


def header(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(f'{user}:{password}'.encode()).decode()}"


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        pytest.param(header("hubA", "password-a"), ("hubA", "password-a"), id="plain"),
        pytest.param(header("hubA", "password-a", "basic"), ("hubA", "password-a"), id="scheme-any-case"),
        pytest.param(header("hubC", "a:b:c"), ("hubC", "a:b:c"), id="colons-belong-to-the-password"),
        pytest.param(header("hubA", ""), ("hubA", ""), id="empty-password"),
        pytest.param(header("hübB", "pässwörd"), ("hübB", "pässwörd"), id="utf8-name-and-password"),
    ],
)
def test_well_formed_credentials_parse(authorization: str, expected: tuple[str, str]) -> None:
    assert parse_basic(authorization) == expected


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        pytest.param(None, "authentication required", id="missing"),
        pytest.param("", "authentication required", id="empty"),
        pytest.param("Basic", "authentication required", id="no-credentials"),
        pytest.param(header("hubA", "password-a", "Bearer"), "authentication required", id="other-scheme"),
        pytest.param("Basic not*base64", "malformed Basic credentials", id="not-base64"),
        pytest.param("Basic " + base64.b64encode(b"no-colon").decode(), "malformed Basic credentials", id="no-colon"),
        pytest.param("Basic " + base64.b64encode(b"hub:\xff\xfe").decode(), "malformed Basic credentials",
                     id="not-utf8"),
        pytest.param("Basic aHViQTpw\u00e4c3M=", "malformed Basic credentials", id="non-ascii-header"),
        pytest.param("Basic " + "A" * (MAX_AUTHORIZATION_CHARS + 4), "malformed Basic credentials", id="too-long"),
    ],
)  # fmt: skip
def test_anything_else_is_unauthorized(authorization: str | None, message: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        parse_basic(authorization)
    assert caught.value.message == message and caught.value.status == 401


def test_verify_wants_the_hubs_own_password() -> None:
    assert verify("hubA", "password-a", CREDENTIALS)
    assert not verify("hubA", "password-A", CREDENTIALS)
    assert not verify("hubA", "pässwörd", CREDENTIALS)  # another hub's password
    assert verify("hübB", "pässwörd", CREDENTIALS)
    assert not verify("nobody", "password-a", CREDENTIALS)
    assert not verify("nobody", "\x00" * 32, CREDENTIALS)  # the stand-in compared for unknown names


@on_loop
async def test_good_credentials_name_the_hub(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=3, per_hub=100, window_seconds=60))
    assert await authenticate(header("hübB", "pässwörd"), SOURCE, HubLogins(CREDENTIALS), guard) == "hübB"


@on_loop
async def test_wrong_passwords_count_until_the_source_is_refused_even_the_right_one(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=3, per_hub=100, window_seconds=60))
    for _ in range(3):
        with pytest.raises(Unauthorized, match="wrong hub name or password"):
            await authenticate(header("hubA", "guess"), SOURCE, HubLogins(CREDENTIALS), guard)
    with pytest.raises(TooManyAttempts) as caught:
        await authenticate(header("hubA", "password-a"), SOURCE, HubLogins(CREDENTIALS), guard)
    assert caught.value.retry_after == 60
    assert await authenticate(header("hubA", "password-a"), "203.0.113.9", HubLogins(CREDENTIALS), guard) == "hubA"


@on_loop
async def test_a_malformed_header_is_refused_before_the_guard_counts_it(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=1, per_hub=1, window_seconds=60))
    for _ in range(3):
        with pytest.raises(Unauthorized, match="authentication required"):
            await authenticate(None, SOURCE, HubLogins(CREDENTIALS), guard)
    assert await authenticate(header("hubA", "password-a"), SOURCE, HubLogins(CREDENTIALS), guard) == "hubA"


@on_loop
async def test_a_remembered_header_still_meets_the_guard_and_wrong_ones_still_count(redis: aioredis.Redis) -> None:
    """The right header proved hubA once (remembered); three wrong passwords from the same source
    are each compared and counted, and then the remembered header is refused too."""
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=3, per_hub=100, window_seconds=60))
    logins = HubLogins(CREDENTIALS)
    right = header("hubA", "password-a")
    assert await authenticate(right, "192.0.2.44", logins, guard) == "hubA"
    assert logins.known(right) == "hubA"
    for _ in range(3):
        with pytest.raises(Unauthorized, match="wrong hub name or password"):
            await authenticate(header("hubA", "guess"), "192.0.2.44", logins, guard)
        assert logins.known(header("hubA", "guess")) is None
    with pytest.raises(TooManyAttempts):
        await authenticate(right, "192.0.2.44", logins, guard)


@on_loop
async def test_a_changed_password_refuses_the_remembered_header_at_once(redis: aioredis.Redis) -> None:
    guard = LoginGuard(LoginCounters(redis), LoginLimits(per_source=100, per_hub=100, window_seconds=60))
    credentials = dict(CREDENTIALS)
    logins = HubLogins(credentials)
    old = header("hubA", "password-a")
    assert await authenticate(old, "192.0.2.45", logins, guard) == "hubA"
    credentials["hubA"] = "password-new"
    with pytest.raises(Unauthorized, match="wrong hub name or password"):
        await authenticate(old, "192.0.2.45", logins, guard)
    assert await authenticate(header("hubA", "password-new"), "192.0.2.45", logins, guard) == "hubA"

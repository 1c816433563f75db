"""Failed logins are rate-limited per source (one guess per source for a hub name under attack);
secrets never reach answers or logs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from outpost.settings import Settings
from tests.conftest import HUBS, basic, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")


def source(ip: str, headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "X-Forwarded-For": ip}


async def test_a_guessing_source_is_closed_but_others_are_not(
    api: httpx.AsyncClient, make_settings: Callable[..., Settings]
) -> None:
    make_settings(auth_failures_per_source=5, trusted_proxies="127.0.0.1")
    wrong, right = basic("hubA", "guess"), basic("hubA")
    codes = [(await api.get("/services", headers=source("10.9.9.9", wrong))).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    closed = await api.get("/services", headers=source("10.9.9.9", right))
    assert closed.status_code == 429 and int(closed.headers["retry-after"]) > 0
    assert (await api.get("/services", headers=source("10.1.1.1", right))).status_code == 200


async def test_a_hub_under_attack_stays_open_to_right_passwords_and_gives_each_source_one_guess(
    api: httpx.AsyncClient, make_settings: Callable[..., Settings]
) -> None:
    make_settings(auth_failures_per_source=100, auth_failures_per_hub=10, trusted_proxies="127.0.0.1")
    for attacker in range(10):  # many sources guessing hubA's password
        response = await api.get("/services", headers=source(f"10.66.0.{attacker}", basic("hubA", "guess")))
        assert response.status_code == 401
    # The right password passes from any source without failures, one never seen included.
    assert (await api.get("/services", headers=source("10.7.7.7", basic("hubA")))).status_code == 200
    # Over the hub name's limit a source gets one failure: the next guess from it is not checked.
    guesses = [(await api.get("/services", headers=source("10.8.8.8", basic("hubA", "guess")))).status_code
               for _ in range(2)]  # fmt: skip
    assert guesses == [401, 429]
    assert (await api.get("/services", headers=source("10.7.7.7", basic("hubB")))).status_code == 200


async def test_forwarded_for_is_ignored_unless_trusted(
    api: httpx.AsyncClient, make_settings: Callable[..., Settings]
) -> None:
    make_settings(auth_failures_per_source=3)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # spoofed headers do not spread the count
        assert (await api.get("/services", headers=source(ip, basic("hubA", "x")))).status_code == 401
    assert (await api.get("/services", headers=source("10.0.0.4", basic("hubA")))).status_code == 429


async def test_no_secret_in_any_answer_or_log_line(
    api: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = start_body(certs={"keyfile": "PRIVATE-KEY-PEM", "certfile": "CERT-PEM"})
    body["misc"] = {"port": 0, "ip": "127.0.0.1"}
    answers = [
        await api.post("/services", json=body, headers=basic("hubA")),
        await api.get("/services/srv/1", headers=basic("hubA"), params={"collect_logs": "true"}),
        await api.get("/services", headers=basic("hubA")),
        await api.get("/services", headers=basic("hubA", "wrong")),
        await api.delete("/services/srv/1", headers=basic("hubA"), params={"collect_logs": "true"}),
    ]
    secrets = ["secret-api-token", "PRIVATE-KEY-PEM", "CERT-PEM", *HUBS.values(), settings.crypt_key.get_secret_value()]
    everything = "\n".join([a.text for a in answers] + [r.getMessage() for r in caplog.records])
    for secret in secrets:
        assert secret not in everything

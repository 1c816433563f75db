"""The failed-login limit counts who connected, not what a header claims, and its keys stay small.

Sources are told apart by binding clients to different loopback addresses (127.0.0.0/8 is all
local). Behind a proxy, the proxy is a real configurable-http-proxy, which appends the address it
was connected from to X-Forwarded-For as any reverse proxy does; the outpost trusts one hop.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import pytest

from outpost.cli.devserver import functions_dir
from outpost.ratelimit import hub_bucket, source_id
from tests.e2e.harness import chp_command
from tests.e2e.processes import VENV_BIN, Proc, base_env, free_port, listening, wait_until
from tests.security.stack import Stack, launch, shut_down
from tests.support.raw_http import request_bytes, send

PER_SOURCE = 20  # the default auth_failures_per_source
PER_HUB = 100  # the default auth_failures_per_hub
BURST = 200


def client(url: str, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=source), timeout=30)


def basic(hub: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{hub}:{password}".encode()).decode()


def auth_keys(stack: Stack) -> dict[str, int]:
    """Every key of the login limiter and the memory Redis says it takes."""
    with stack.redis() as redis:
        return {key.decode(): int(redis.memory_usage(key) or 0) for key in redis.scan_iter(match="outpost:auth:*")}


def clear_limits(stack: Stack) -> None:
    with stack.redis() as redis:
        for key in redis.scan_iter(match="outpost:auth:*"):
            redis.delete(key)


@pytest.fixture
def limits(stack: Stack) -> Iterator[Stack]:
    """The shared stack with no failed login counted yet."""
    clear_limits(stack)
    yield stack
    clear_limits(stack)


def test_rotating_forwarded_for_gives_no_extra_guesses(limits: Stack) -> None:
    hub = limits.tenants["hubA"]
    with client(limits.url) as api:
        for n in range(PER_SOURCE):
            answer = api.get(
                "/services", headers={"Authorization": basic("hubA", "guess"), "X-Forwarded-For": f"198.51.100.{n}"}
            )
            assert answer.status_code == 401, answer.text
        answer = api.get(
            "/services", headers={"Authorization": basic("hubA", "guess"), "X-Forwarded-For": "203.0.113.1"}
        )
        assert answer.status_code == 429 and answer.json()["error"] == "TooManyAttempts"
        # Closed even with the right password and a fresh header: the source is the socket's.
        assert api.get("/services", headers={**hub.auth, "X-Forwarded-For": "203.0.113.2"}).status_code == 429
    keys = auth_keys(limits)
    assert f"outpost:auth:block:{source_id('127.0.0.1')}" in keys
    assert [k for k in keys if k.startswith("outpost:auth:fails-source:")] == [
        f"outpost:auth:fails-source:{source_id('127.0.0.1')}"
    ]


def test_a_victims_address_in_forwarded_for_does_not_lock_out_the_victim(limits: Stack) -> None:
    victim = "127.0.0.2"
    with client(limits.url) as attacker:
        for _ in range(PER_SOURCE + 1):
            attacker.get("/services", headers={"Authorization": basic("hubA", "guess"), "X-Forwarded-For": victim})
        assert attacker.get("/services", headers=limits.tenants["hubA"].auth).status_code == 429
    with client(limits.url, victim) as hub:
        answer = hub.get("/services", headers=limits.tenants["hubA"].auth)
        assert answer.status_code == 200, answer.text
    assert f"outpost:auth:block:{source_id(victim)}" not in auth_keys(limits)


# --- concurrency: a guess is counted before it is answered --------------------------------------


async def burst(url: str, source: str, authorization: str, n: int = BURST) -> list[int]:
    """`n` requests at once from `source` (64 connections, kept alive: a proxy's way of sending)."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    transport = httpx.AsyncHTTPTransport(local_address=source, limits=limits)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=60) as api:
        answers = await asyncio.gather(*(api.get("/services", headers={"Authorization": authorization})
                                         for _ in range(n)))  # fmt: skip
    return [answer.status_code for answer in answers]


def status(url: str, source: str, headers: dict[str, str]) -> int:
    with client(url, source) as api:
        return api.get("/services", headers=headers).status_code


def test_a_burst_of_wrong_passwords_from_one_source_gets_exactly_its_limit_checked(limits: Stack) -> None:
    """Was 200 x 401: each instance cached "allowed" for a second before any failure was counted."""
    codes = asyncio.run(burst(limits.url, "127.0.0.5", basic("hubA", "guess")))
    assert sorted(codes) == [401] * PER_SOURCE + [429] * (BURST - PER_SOURCE), sorted(set(codes))
    with limits.redis() as redis:
        assert int(redis.get(f"outpost:auth:fails-source:{source_id('127.0.0.5')}") or 0) == PER_SOURCE
    # The attacker's source is closed even to the right password; the hub from elsewhere is not.
    assert status(limits.url, "127.0.0.5", limits.tenants["hubA"].auth) == 429
    assert status(limits.url, "127.0.0.6", limits.tenants["hubA"].auth) == 200


def test_other_sources_failures_never_refuse_a_hubs_right_password_from_a_clean_source(limits: Stack) -> None:
    """Was 429 from a new source once a burst had filled the hub name's count: a lock-out from anywhere.
    Now sources over the hub name's limit get one guess each, and right passwords pass."""
    attackers = [f"127.0.0.{n}" for n in range(10, 16)]  # 6 x 20 failures: over the hub name's 100

    async def attack() -> list[list[int]]:
        return await asyncio.gather(*(burst(limits.url, source, basic("hubA", "guess"), 40) for source in attackers))

    counted = sum(codes.count(401) for codes in asyncio.run(attack()))
    assert PER_HUB <= counted <= len(attackers) * PER_SOURCE
    newcomer = "127.0.0.20"  # never logged in, no failures
    assert status(limits.url, newcomer, limits.tenants["hubA"].auth) == 200
    assert status(limits.url, newcomer, limits.tenants["hubB"].auth) == 200
    # A fresh source guessing the attacked hub name gets one answer, then 429.
    assert sorted(asyncio.run(burst(limits.url, "127.0.0.21", basic("hubA", "guess"), 30))) == [401] + [429] * 29


def test_failed_key_logins_spend_the_same_budget_and_close_the_source_even_to_the_right_key(
    limits: Stack, tmp_path: Path
) -> None:
    """Keys nobody listed, 4 connections at once trying 10 each from 127.0.0.5: 20 are answered, then
    the daemon disconnects; the hub's own key is refused from there and logs in from 127.0.0.6.
    Was: no limit at all."""
    strangers = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(10)]

    async def guess() -> None:
        options = asyncssh.SSHClientConnectionOptions(
            username="jhuboutpost", client_keys=strangers, known_hosts=None, agent_path=None
        )
        try:
            async with asyncssh.connect("127.0.0.1", limits.ssh_port, local_addr=("127.0.0.5", 0), options=options):
                raise AssertionError("a stranger's key logged in")
        except (asyncssh.PermissionDenied, asyncssh.DisconnectError, ConnectionError):
            pass

    async def attack() -> None:
        await asyncio.gather(*(guess() for _ in range(4)))

    asyncio.run(attack())
    with limits.redis() as redis:
        assert int(redis.get(f"outpost:auth:fails-source:{source_id('127.0.0.5')}") or 0) == PER_SOURCE
    blocked = asyncio.run(limits.ssh("hubA", tmp_path / "blocked").start_master("-oBindAddress=127.0.0.5"))
    assert blocked.returncode == 255 and "too many failed logins" in blocked.stderr, blocked.stderr
    clean = limits.ssh("hubA", tmp_path / "clean")
    assert asyncio.run(clean.start_master("-oBindAddress=127.0.0.6")).returncode == 0
    asyncio.run(clean.mux("exit"))


# --- the functions as deployed: functions-framework under gunicorn's UvicornWorker -------------


@pytest.mark.parametrize(
    ("forwarded_allow_ips", "guesses"),
    [
        ("", PER_SOURCE),  # as knative/*.yaml and the image set it: the limit holds
        (None, PER_SOURCE + 10),  # uvicorn's default trusts 127.0.0.1, queue-proxy's address: no limit
    ],
    ids=["as-deployed", "uvicorn-default"],
)
def test_functions_framework_believes_no_forwarded_for_as_deployed(
    limits: Stack, tmp_path: Path, forwarded_allow_ips: str | None, guesses: int
) -> None:
    """`outpost serve-function` (the image's command) serving the poll function on the stack's Redis, peer 127.0.0.1
    as behind queue-proxy, with rotating X-Forwarded-For."""
    port = free_port()
    env = limits.function_env(tmp_path)
    if forwarded_allow_ips is not None:
        env["FORWARDED_ALLOW_IPS"] = forwarded_allow_ips
    cmd = [str(VENV_BIN / "outpost"), "serve-function", "--target", "poll_service",
           "--source", str(functions_dir() / "poll" / "main.py"), "--port", str(port)]  # fmt: skip
    function = Proc.spawn("functions-framework", cmd, env, tmp_path / "function.log", cwd=tmp_path)
    try:
        wait_until("the poll function", lambda: function.check_alive() or listening(port), timeout=30)
        codes = []
        with client(f"http://127.0.0.1:{port}") as api:
            for n in range(guesses + 1):
                headers = {"Authorization": basic("hubA", "guess"), "X-Forwarded-For": f"198.51.100.{n}"}
                codes.append(api.get("/services", headers=headers).status_code)
    finally:
        function.stop(signal.SIGTERM)
    assert "Traceback" not in function.text(), function.tail()
    if forwarded_allow_ips == "":
        assert codes == [401] * PER_SOURCE + [429]
    else:  # each forged entry counted as a source of its own
        assert codes == [401] * (guesses + 1)


# --- behind a trusted reverse proxy ----------------------------------------------------------


class Proxied:
    """`outpost dev` trusting one hop, behind a real configurable-http-proxy."""

    def __init__(self, stack: Stack, proxy: Proc, port: int) -> None:
        self.stack, self.proxy, self.port, self.url = stack, proxy, port, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def proxied(stack_dir: Path) -> Iterator[Proxied]:
    stack = launch(stack_dir / "proxied", f"security-{secrets.token_hex(4)}", values={"trustedProxies": 1})
    port, api_port = free_port(), free_port()
    env = {**base_env(f"proxy-{secrets.token_hex(4)}"), "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16)}
    cmd = [chp_command(), "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
           "--api-port", str(api_port), "--default-target", stack.url]  # fmt: skip
    proxy = Proc.spawn("configurable-http-proxy", cmd, env, stack_dir / "proxy.log", cwd=stack_dir)
    try:
        wait_until("configurable-http-proxy", lambda: proxy.check_alive() or listening(port), timeout=30)
        yield Proxied(stack, proxy, port)
    finally:
        proxy.stop()
        shut_down(stack)


def test_behind_a_trusted_proxy_the_client_written_entries_are_not_believed(proxied: Proxied) -> None:
    """The old setting took the first entry, which the client writes: unlimited guesses."""
    stack, victim = proxied.stack, "127.0.0.4"
    clear_limits(stack)
    with client(proxied.url, "127.0.0.3") as attacker:
        for n in range(PER_SOURCE):
            forged = f"192.0.2.{n}, {victim}"  # the proxy appends 127.0.0.3 after these
            answer = attacker.get(
                "/services", headers={"Authorization": basic("hubA", "guess"), "X-Forwarded-For": forged}
            )
            assert answer.status_code == 401, answer.text
        assert attacker.get("/services", headers={"Authorization": basic("hubA", "guess")}).status_code == 429
    with client(proxied.url, victim) as hub:
        assert hub.get("/services", headers=stack.tenants["hubA"].auth).status_code == 200
    keys = auth_keys(stack)
    assert f"outpost:auth:block:{source_id('127.0.0.3')}" in keys
    assert f"outpost:auth:block:{source_id(victim)}" not in keys
    assert f"outpost:auth:block:{source_id('127.0.0.1')}" not in keys  # the proxy itself is not the caller


def test_failed_logins_with_huge_hub_names_add_few_small_keys(proxied: Proxied) -> None:
    """200 failed logins, each from its own source with its own long hub name: was 8.9 MB of keys."""
    stack = proxied.stack
    clear_limits(stack)
    with stack.redis() as redis:
        used_before = int(redis.info("memory")["used_memory"])
    names = ["漢" * 1000 + secrets.token_hex(4) for _ in range(200)]  # 3 KB each: near the header cap
    for n, name in enumerate(names):  # raw sockets: an httpx client per source costs 50 ms of TLS setup
        request = request_bytes(b"GET", b"/services", [(b"Authorization", basic(name, "guess").encode())])
        answer = send(proxied.port, request, source=f"127.0.1.{n + 1}")
        assert answer is not None and answer.status == 401, (n, answer)
    # Longer credentials are refused before they are counted at all.
    with client(proxied.url, "127.0.2.1") as attacker:
        answer = attacker.get("/services", headers={"Authorization": basic("x" * 44_000, "guess")[:12_000]})
        assert answer.status_code == 401 and answer.json()["message"] == "malformed Basic credentials"
    keys = auth_keys(stack)
    with stack.redis() as redis:
        used_after = int(redis.info("memory")["used_memory"])
    sources = [k for k in keys if k.startswith("outpost:auth:fails-source:")]
    buckets = [k for k in keys if k.startswith("outpost:auth:fails-hub:")]
    assert len(sources) == 200 and set(keys) == set(sources) | set(buckets)
    assert {k.rsplit(":", 1)[1] for k in buckets} == {hub_bucket(name) for name in names}
    assert max(len(k) for k in keys) < 64
    total = sum(keys.values())
    print(f"\nlimiter keys after 200 failed logins: {len(keys)} keys, MEMORY USAGE {total} bytes, "
          f"used_memory {used_after - used_before:+d} bytes")  # fmt: skip
    assert total < 64 * 1024, total

"""The fuzzing harness: one seeded Outpost per module, a checked request helper, store invariants.

Every request goes through `Fuzz.send`, which counts it and checks what holds for any answer: no
5xx, a JSON body, no traceback or Python file path, no secret of a seeded service, and nothing of
another hub's seeded services. `Fuzz.verify` checks what holds for the store afterwards: every
record decrypts and is complete, indexes and slot counters agree, the seeded services still run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import signal
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import psutil
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings

from outpost.crypto import Crypt
from outpost.hub import HubClient
from outpost.lifecycle.stop import stop_if_known
from outpost.models import ServiceId
from outpost.runtime import Runtime
from outpost.settings import Settings
from outpost.store.keys import key_index, key_record, key_user_slots

# Examples per property. CI keeps the small default, derandomized so a green run stays green; a long
# run sets e.g. OUTPOST_FUZZ_EXAMPLES=2000 and explores new inputs each time.
EXAMPLES = int(os.environ.get("OUTPOST_FUZZ_EXAMPLES", "") or 25)
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not os.environ.get("OUTPOST_FUZZ_EXAMPLES"),
    deadline=None,
    database=None,  # nothing written into the work tree; failures print a reproducible seed
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # the environment-isolation fixture, per test on purpose
    ],
)
BASE_URL = "http://outpost"
HUBS = {"hubA": "password-a", "hubB": "password-b"}
MAX_BODY_BYTES = 64 * 1024
# The `misc` keys a hub may override while fuzzing: never `ip`, `port` or `cmd`, so no fuzzed body
# can make the outpost connect anywhere but to its own servers on 127.0.0.1, or run another program.
FUZZ_OVERRIDES = ["env", "args", "start_timeout"]
# Any of these in an answer means a Python traceback or a source path escaped (unless the caller
# sent that very text: error messages may quote the request's path).
TRACE_PATTERN = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+|site-packages|lib/outpost/|tiny_singleuser"
    r"|(?:/[\w.-]+){2,}\.py\b"
)


def unsafe_overrides(body: Any) -> bool:
    """A fuzzed `misc` naming `cmd`, `ip` or `port`. The policy refuses them (and a test checks it
    with harmless values); were it broken, a fuzzed value would decide where the outpost connects
    and what it runs, so such bodies are never sent."""
    misc = body.get("misc") if isinstance(body, dict) else None
    return isinstance(misc, dict) and bool({"cmd", "ip", "port"} & set(misc))


def basic(hub: str, password: str | None = None) -> str:
    token = base64.b64encode(f"{hub}:{password if password is not None else HUBS[hub]}".encode())
    return f"Basic {token.decode()}"


@dataclass(frozen=True)
class Seed:
    """A service started before fuzzing, with distinctive identifiers to look for in answers."""

    hub: str
    name: str
    start_id: str
    user: str
    token: str = field(default_factory=lambda: f"SEED-SECRET-{secrets.token_hex(12)}")

    @property
    def sid(self) -> ServiceId:
        return ServiceId(self.hub, self.name, self.start_id)

    @property
    def path(self) -> str:
        return f"/services/{self.name}/{self.start_id}"

    def body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "env": {
                "JUPYTERHUB_API_TOKEN": self.token,
                "JUPYTERHUB_USER": self.user,
                "JUPYTERHUB_USER_ID": "4711",
                "JUPYTERHUB_SERVICE_PREFIX": f"/user/{self.user}/{self.name}/",
            },
            "user_options": {"start_id": self.start_id},
            "misc": {},
        }

    def markers(self) -> list[str]:
        """What no other hub may ever see."""
        return [m for m in (self.name, self.start_id, self.user) if m]


def make_seeds() -> tuple[Seed, ...]:
    return (
        Seed("hubA", "zebra-seed-q7x", "4242001", "alice-seed-u1"),
        Seed("hubA", "", "4242002", "alice-seed-u1"),  # a default server: the empty name
        Seed("hubA", "quokka-seed-m2v", "quokka-start-9d", "bob-seed-u2"),
        Seed("hubB", "narwhal-seed-k5w", "8080881", "carol-seed-u3"),
    )


@dataclass
class FuzzStats:
    requests: int = 0
    server_errors: int = 0
    hub_callbacks: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    property_examples: int = 0
    framework_answers: int = 0
    bookkeeping: int = 0  # the harness's own requests (seeding, clean-up, checks): checked, not counted
    spawn_failures: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        spread = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        failures = ", ".join(f"{what}: {n}" for what, n in sorted(self.spawn_failures.items()))
        return (
            f"outpost fuzz: {self.requests} requests fuzzed, {self.server_errors} answered 5xx; "
            f"{self.hub_callbacks} hub callbacks intercepted; {self.property_examples} parser examples; "
            f"{self.framework_answers} plain-text 404/405 from functions-framework's router"
            + (f"\noutpost fuzz statuses: {spread}" if spread else "")
            + (f"\noutpost fuzz 419 answers: {failures}" if failures else "")
            + f"\noutpost fuzz: {self.bookkeeping} further requests of the harness (seeding, clean-up, checks)"
        )


STATS = FuzzStats()


class HubCallbacks:
    """Stands in for every hub callback URL: fuzzed bodies must never make the outpost call out."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # Refuse what httpx's real transport refuses before it would connect.
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {request.url.scheme!r}", request=request)
        if not request.url.host:
            raise httpx.ConnectError("no host", request=request)
        self.urls.append(str(request.url))
        STATS.hub_callbacks += 1
        return httpx.Response(204)


def _latin1_or_utf8(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


@dataclass(repr=False)
class Fuzz:
    """The Outpost under test, and what it was seeded with."""

    app: Any
    client: httpx.AsyncClient  # the hubs' own source address
    settings: Settings
    redis: aioredis.Redis
    runtime: Runtime
    seeds: tuple[Seed, ...]
    data_dir: Path
    callbacks: HubCallbacks

    def __repr__(self) -> str:
        return "Fuzz(...)"

    def stranger(self) -> httpx.AsyncClient:
        """A client from a new source address for each request without valid credentials: failed
        logins are rate-limited per source, and the fuzzer should reach the credential check."""
        self._strangers = getattr(self, "_strangers", 0) + 1
        address = f"198.18.{self._strangers // 250 % 250}.{self._strangers % 250 + 1}"  # in-process only
        transport = httpx.ASGITransport(app=self.app, client=(address, 40001))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60)

    # --- requests -----------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        url: str,
        *,
        hub: str | None,
        headers: Mapping[str, str | bytes] | Sequence[tuple[str | bytes, str | bytes]] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        expect: set[int] | None = None,
        bookkeeping: bool = False,
        identity: str | None = None,
    ) -> httpx.Response:
        """Send one request as `hub`, with its credentials, or (hub None) with whatever credentials
        `headers` hold, as `identity` if they are that hub's; then check the answer."""
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        if hub is not None:
            items = [(k, v) for k, v in items if _text(k).lower() != "authorization"]
            items.append(("Authorization", basic(hub)))
        identity = hub or identity
        raw = [(_latin1_or_utf8(k), _latin1_or_utf8(v)) for k, v in items]
        client = self.client if identity is not None else self.stranger()
        sent = content if isinstance(content, bytes) else None
        if not isinstance(content, bytes) and content is not None:
            chunks = [chunk async for chunk in content]
            sent = b"".join(chunks)
            content = _stream(chunks)  # no Content-Length: the size limit must hold while streaming
        try:
            request = client.build_request(method, url, headers=raw, content=content)
        except httpx.InvalidURL:  # longer than httpx lets a URL be (a server in front would refuse it)
            response = await self._asgi(method, url, raw, sent or b"", identity)
            shown_url = unquote(url)
        else:
            response = await client.send(request)
            await response.aread()
            shown_url = unquote(str(request.url))
        finally:
            if client is not self.client:
                await client.aclose()
        if bookkeeping:
            STATS.bookkeeping += 1
        else:
            STATS.requests += 1
            STATS.statuses[response.status_code] += 1
        if response.status_code >= 500:
            STATS.server_errors += 1
        sent_text = " ".join([shown_url, *(_text(v) for _, v in raw), (sent or b"").decode("utf-8", "replace")])
        self.check_answer(f"{method} {shown_url[:300]}", sent_text, response, identity)
        if response.status_code == 419 and not bookkeeping:
            answer = response.json()
            STATS.spawn_failures[str(answer["class"])] += 1
        if expect is not None:
            assert response.status_code in expect, (response.status_code, response.text[:500])
        return response

    async def _asgi(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes, identity: str | None
    ) -> httpx.Response:
        """One request straight into the ASGI app, as a server would hand it over."""
        raw_path, _, query = url.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(k.lower(), v) for k, v in headers],
            "client": ("127.0.0.1", 40000) if identity else ("198.18.255.1", 40001),
            "server": ("outpost", 80),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        answer: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer.update(status=message["status"], headers=message.get("headers", []))
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await self.app(scope, receive, send)
        return httpx.Response(answer["status"], headers=answer["headers"], content=answer["body"])

    def check_answer(self, where: str, sent: str, response: httpx.Response, hub: str | None) -> None:
        """What holds for every answer; `sent` is everything the caller sent (echoes are no leak)."""
        text = response.text
        where = f"{where} -> {response.status_code}: {text[:300]!r}"
        assert response.status_code < 500, where
        if framework_answer(response):
            STATS.framework_answers += 1
            return
        if response.headers.get("content-type", "").startswith("text/plain") and "/metrics" in where:
            answer: Any = text  # Prometheus' text format (a public route of the poll function)
        else:
            assert response.headers.get("content-type", "").startswith("application/json"), where
            answer = json.loads(text) if text or not where.startswith("HEAD ") else None
        if response.status_code == 419:
            # The protocol's `traceback` field carries the server's own log tail, by design; the
            # rest of the answer must not show anything of ours.
            answer = {**answer, "traceback": ""}
        shown = json.dumps(answer, ensure_ascii=False) + " " + " ".join(response.headers.values())
        for found in TRACE_PATTERN.finditer(shown):
            assert found.group() in sent, f"{found.group()!r} in {where}"
        for seed in self.seeds:
            assert seed.token not in text, f"secret token of {seed.sid} in {where}"
            if hub == seed.hub:
                continue
            for marker in seed.markers():
                # Echoing what the caller sent is not a leak; showing another hub's record is.
                if marker in shown and marker not in sent:
                    raise AssertionError(f"{seed.hub}'s {marker!r} shown to {hub or 'no hub'}: {where}")

    async def start_seeds(self) -> None:
        for seed in self.seeds:
            response = await self.send(
                "POST",
                "/services",
                hub=seed.hub,
                content=json.dumps(seed.body()).encode(),
                headers={"Content-Type": "application/json"},
                expect={200},
                bookkeeping=True,
            )
            assert response.json()["service"].startswith("http://127.0.0.1:")

    # --- clean-up and invariants --------------------------------------------------------------

    async def settle(self) -> None:
        """Let background starts and stops finish."""
        for _ in range(3):
            pending = [t for t in self.runtime.tasks if not t.done()]
            if not pending:
                return
            await asyncio.wait(pending, timeout=30)
        assert not [t for t in self.runtime.tasks if not t.done()], "background work did not finish"

    async def stop_unseeded(self) -> int:
        """Stop every service the fuzzer started (through the API, as the hub would); returns how many."""
        await self.settle()
        seeded = {s.sid for s in self.seeds}
        stopped = 0
        for hub in HUBS:
            listing = await self.send("GET", "/services", hub=hub, expect={200}, bookkeeping=True)
            for entry in listing.json():
                sid = ServiceId(hub, entry["name"], entry["start_id"])
                if sid in seeded:
                    continue
                path = "/services/" + "/".join(_quote(p) for p in (sid.name, sid.start_id))
                await self.send("DELETE", path, hub=hub, expect={200, 404}, bookkeeping=True)
                stopped += 1
        await self.settle()
        return stopped

    async def verify(self) -> None:
        """Every record decrypts and is whole; indexes and slots agree; the seeded services run."""
        await self.stop_unseeded()
        crypt = Crypt(self.settings.crypt_keys())
        records: dict[str, dict[bytes, bytes]] = {}
        async for raw_key in self.redis.scan_iter(match="outpost:hub:*:svc:*", count=1000):
            key = raw_key.decode()
            kind = (await self.redis.type(key)).decode()
            if kind == "string":  # the certificates of an async start, kept until it runs
                crypt.decrypt_json(await self.redis.get(key))
                continue
            assert kind == "hash", (key, kind)
            fields = await self.redis.hgetall(key)
            for name in (b"body", b"state", b"answer"):
                if name in fields:
                    crypt.decrypt_json(fields[name])  # raises UndecryptableRecord
            for name in (b"hub", b"name", b"start_id", b"phase", b"body"):
                assert name in fields, f"record {key} lost its {name.decode()}: {sorted(fields)}"
            sid = ServiceId(*(fields[k].decode() for k in (b"hub", b"name", b"start_id")))
            assert key == key_record(sid), (key, sid)
            assert await self.redis.sismember(key_index(sid.hub), key), f"{key} missing from its index"
            records[key] = fields
        for hub in HUBS:
            for member in await self.redis.smembers(key_index(hub)):
                assert member.decode() in records, f"index of {hub} names a missing record {member!r}"
        per_user = Counter((f[b"hub"].decode(), f[b"user"].decode()) for f in records.values())
        async for raw_key in self.redis.scan_iter(match="outpost:slots:user:*", count=1000):
            parts = raw_key.decode().split(":")
            if len(parts) != 5:  # per-flavor counters; no flavors are configured here
                continue
            hub, user = unquote(parts[3]), unquote(parts[4])
            value = int(await self.redis.get(raw_key) or 0)
            assert value == per_user[(hub, user)], f"slot counter {raw_key!r}={value}, records: {per_user}"
            assert raw_key.decode() == key_user_slots(hub, user)
        expected_keys = {key_record(s.sid) for s in self.seeds}
        extra = set(records) - expected_keys
        for key in extra:  # the API could not stop them (that is the failure): stop them here
            fields = records[key]
            await stop_if_known(self.runtime, ServiceId(*(fields[k].decode() for k in (b"hub", b"name", b"start_id"))))
        assert not extra, f"records beyond the seeds, which the API could not stop: {extra}"
        for seed in self.seeds:
            fields = records[key_record(seed.sid)]
            assert fields[b"phase"] == b"running", (seed.sid, fields[b"phase"])
            body = crypt.decrypt_json(fields[b"body"])
            assert body["env"] == seed.body()["env"] and body["name"] == seed.name, seed.sid
            poll = await self.send(
                "GET", seed.path + "?collect_logs=true", hub=seed.hub, expect={200}, bookkeeping=True
            )
            assert poll.json()["status"] is None, (seed.sid, poll.json())
        orphans = self.server_processes() - self.seed_pids(records, crypt)
        self.kill(orphans)
        assert not orphans, f"servers outlived their records: {orphans}"

    def seed_pids(self, records: dict[str, dict[bytes, bytes]], crypt: Crypt) -> set[int]:
        return {int(crypt.decrypt_json(f[b"state"])["pid"]) for f in records.values() if b"state" in f}

    def kill(self, groups: set[int]) -> None:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

    def server_processes(self) -> set[int]:
        """Process-group leaders of the servers this outpost started (they run in its data dir)."""
        found = set()
        root = str(self.data_dir)
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.cwd().startswith(root) and proc.pid == os.getpgid(proc.pid):
                    found.add(proc.pid)
            except (psutil.Error, ProcessLookupError):
                continue
        return found


def install_hub_stand_in(runtime: Runtime, callbacks: HubCallbacks) -> httpx.AsyncClient:
    """Route every hub callback to `callbacks`: fuzzed env URLs must not reach the network. The
    runtime is built once per event loop, so this holds until the settings change."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(callbacks))
    runtime.hub = HubClient(client, retries=1)
    return client


def framework_answer(response: httpx.Response) -> bool:
    """functions-framework's own router answers before our code for paths its `{path:path}` route
    cannot match (a decoded newline, `/robots.txt`, `/favicon.ico`) and for methods it does not
    route (TRACE, CONNECT): plain text, no data, nothing of ours. Counted, not failed."""
    return response.headers.get("content-type", "").startswith("text/plain") and (
        response.status_code in (404, 405)
        and response.text in ("", "Not Found", "Method Not Allowed")  # empty: the answer to a HEAD
    )


async def _stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _quote(part: str) -> str:
    return quote(part, safe="")

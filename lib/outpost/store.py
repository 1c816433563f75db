"""Service records in Redis: one hash per service, a per-hub index, atomic phase changes and slots.

Layout (every key is built by `key_*` below; components are percent-encoded, so ":" is safe):
  outpost:hub:{hub}:svc:{name}:{start_id}   hash   plain metadata + Fernet-encrypted `body`, `state`, `answer`
  outpost:hub:{hub}:services                set    record keys of that hub (listing never scans others)
  outpost:addresses                         hash   "host:port" -> record key (the SSH daemon's lookup): one owner
                                                   per address, the first; an entry leaves when its server does
  outpost:expiry                            zset   record keys scored by the end of their runtime limit
  outpost:slots:flavor:{flavor}             string services holding a slot of that flavor (all hubs)
  outpost:slots:user:{hub}:{user}[:{flavor}] string a user's slots, in total and per flavor
  outpost:hub:{hub}:svc:{name}:{start_id}:tunnel  string the daemon recreating its tunnel (expires)
  outpost:once:{id}                         string idempotency marker of a delivered event
  outpost:stopped:{hub}:{name}:{start_id}   string tombstone of a stop (TTL): its server is never re-adopted

Every write may be sent twice: the client retries a command whose connection failed (a failover), and the
first attempt may have run. Writes that are not naturally idempotent carry a random write id (a record's
`created_by`, `moved_by`), by which the script recognises its own earlier run and answers as that run did.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import LockError, NoScriptError

from outpost.crypto import Crypt
from outpost.errors import ReplicasBehind, UndecryptableRecord
from outpost.flavors import FlavorLimits
from outpost.models import ACTIVE_PHASES, Phase, ServiceId, ServiceMeta

log = logging.getLogger(__name__)
PLAIN_FIELDS = (
    "hub", "name", "start_id", "user", "user_id", "flavor", "phase",
    "start_date", "end_date", "last_update", "exit_code", "address", "state_stored",
    "observed", "observed_at",
)  # fmt: skip
ENCRYPTED_FIELDS = ("body", "state", "answer")
ADDRESSES = "outpost:addresses"
EXPIRY = "outpost:expiry"
CERTS_TTL_SECONDS = 900
# A stop's tombstone outlives many reconciler runs (every minute), so a stopped server is never re-adopted.
TOMBSTONE_TTL_SECONDS = 3600
# What a backend keeps with a server (sealed) so that a lost record can be rebuilt from it.
IDENTITY_FIELDS = ("user", "user_id", "flavor", "start_date", "end_date", "address")
# What a poll reads: the phase and exit code, the status an event observed, the backend state.
POLL_FIELDS = ("phase", "exit_code", "observed", "observed_at", "state")
# Records in these phases keep their address against a newcomer: their server may still be there.
HOLDING_PHASES = (*sorted(ACTIVE_PHASES), Phase.STOPPING)


@functools.lru_cache(maxsize=65536)  # key names are built for every request; names repeat
def _q(part: str) -> str:
    return quote(part, safe="")


def key_record(sid: ServiceId) -> str:
    return f"outpost:hub:{_q(sid.hub)}:svc:{_q(sid.name)}:{_q(sid.start_id)}"


def key_index(hub: str) -> str:
    return f"outpost:hub:{_q(hub)}:services"


def key_certs(sid: ServiceId) -> str:
    return key_record(sid) + ":certs"


def key_tombstone(sid: ServiceId) -> str:
    return f"outpost:stopped:{_q(sid.hub)}:{_q(sid.name)}:{_q(sid.start_id)}"


def key_tunnel_claim(sid: ServiceId) -> str:
    return key_record(sid) + ":tunnel"


def key_flavor_slots(flavor: str) -> str:
    return f"outpost:slots:flavor:{_q(flavor)}"


def key_user_slots(hub: str, user: str, flavor: str | None = None) -> str:
    base = f"outpost:slots:user:{_q(hub)}:{_q(user)}"
    return base if flavor is None else f"{base}:{_q(flavor)}"


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def now_iso() -> str:
    return _iso(dt.datetime.now(dt.UTC))


def _write_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Replication:
    """How many replicas must acknowledge a write the hub is answered for, and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 1000


@dataclass(frozen=True)
class Created:
    ok: bool
    refusal: str = ""  # "exists", "flavor_full", "user_flavor_limit", "user_total_limit"
    count: int = 0


@dataclass(frozen=True)
class ImportedRecord:
    """A running server started by another outpost (`outpost import-upstream`), in our record's terms."""

    sid: ServiceId
    user: str
    user_id: str
    flavor: str
    start_date: dt.datetime
    end_date: dt.datetime | None  # the end of its runtime limit
    last_update: dt.datetime
    address: str  # "host:port" the hub's forwards go to, "" for none
    body: dict[str, Any]
    state: dict[str, Any]
    answer: str


@dataclass(frozen=True)
class PollView:
    phase: Phase
    exit_code: int | None
    observed_exit: int | None
    observed_at: float
    state: dict[str, Any] | None


@dataclass(frozen=True)
class Claim:
    """What `mark_running` did: `found` is the phase the record was in (None: it is gone); `holder`, the
    live record that keeps the address, in which case nothing changed."""

    found: Phase | None
    holder: ServiceId | None = None


@dataclass(frozen=True)
class AddressOwner:
    hub: str
    name: str
    start_id: str
    phase: Phase


@dataclass(frozen=True)
class TunnelTarget:
    id: ServiceId
    answer: str
    setup_tunnel_url: str
    api_token: str


# Checks the limits and takes a slot in one step, so concurrent starts never exceed a limit.
# KEYS: record, index, flavor slots, user-flavor slots, user slots, expiry
# ARGV: flavor_max, per_user_max, user_total_max, end timestamp (0: none), write_id, then field/value pairs
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_by') == ARGV[5] then return {'ok', 0} end
  return {'exists', 0}
end
local checks = {{KEYS[4], ARGV[2], 'user_flavor_limit'}, {KEYS[3], ARGV[1], 'flavor_full'},
                {KEYS[5], ARGV[3], 'user_total_limit'}}
for _, c in ipairs(checks) do
  local n = tonumber(redis.call('GET', c[1]) or '0')
  if tonumber(c[2]) >= 0 and n >= tonumber(c[2]) then return {c[3], n} end
end
for i = 3, 5 do redis.call('INCR', KEYS[i]) end
redis.call('HSET', KEYS[1], 'slot', '1', 'created_by', ARGV[5], unpack(ARGV, 6))
redis.call('SADD', KEYS[2], KEYS[1])
if tonumber(ARGV[4]) > 0 then redis.call('ZADD', KEYS[6], ARGV[4], KEYS[1]) end
return {'ok', 0}
"""

# Writes a server another outpost started as a RUNNING record, whole or not at all: never over an
# existing record, never over another record's address (that address's forwards belong to it).
# KEYS: record, index, flavor slots, user-flavor slots, user slots, expiry, addresses
# ARGV: end timestamp (0: none), address ("" for none), then field/value pairs
_IMPORT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if ARGV[2] ~= '' and redis.call('HEXISTS', KEYS[7], ARGV[2]) == 1 then return 'address_taken' end
for i = 3, 5 do redis.call('INCR', KEYS[i]) end
redis.call('HSET', KEYS[1], 'slot', '1', unpack(ARGV, 3))
redis.call('SADD', KEYS[2], KEYS[1])
if tonumber(ARGV[1]) > 0 then redis.call('ZADD', KEYS[6], ARGV[1], KEYS[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[7], ARGV[2], KEYS[1]) end
return 'ok'
"""

# Withdraws a record's address from the index, unless another record holds it by now.
_WITHDRAW = """
local function withdraw(record, addresses)
  local address = redis.call('HGET', record, 'address')
  if address and address ~= '' and redis.call('HGET', addresses, address) == record then
    redis.call('HDEL', addresses, address)
  end
end
"""

# Deletes a record and everything pointing at it; frees its slot exactly once; leaves a tombstone.
# KEYS: record, index, certs, addresses, flavor slots, user-flavor slots, user slots, expiry, tombstone
# ARGV: tombstone TTL
_FORGET = (
    _WITHDRAW
    + """
redis.call('SET', KEYS[9], '1', 'EX', ARGV[1])
if redis.call('HGET', KEYS[1], 'slot') == '1' then
  for i = 5, 7 do
    if tonumber(redis.call('DECR', KEYS[i])) < 0 then redis.call('SET', KEYS[i], 0) end
  end
end
withdraw(KEYS[1], KEYS[4])
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], KEYS[1])
redis.call('ZREM', KEYS[8], KEYS[1])
"""
)

# Whether a value is one of a list joined by ",".
_LISTED = """
local function listed(value, list)
  for item in string.gmatch(list, '[^,]+') do
    if item == value then return true end
  end
  return false
end
"""

# Rebuilds a lost record of a running server, unless a record or a tombstone is there: "exists", "stopped", "adopted".
# KEYS: record, index, addresses, flavor slots, user-flavor slots, user slots, expiry, tombstone
# ARGV: end timestamp (0: none), address, then field/value pairs
_ADOPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if redis.call('EXISTS', KEYS[8]) == 1 then return 'stopped' end
for i = 4, 6 do redis.call('INCR', KEYS[i]) end
redis.call('HSET', KEYS[1], 'slot', '1', unpack(ARGV, 3))
redis.call('SADD', KEYS[2], KEYS[1])
local holder = ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[2])
if ARGV[2] ~= '' and not (holder and redis.call('EXISTS', holder) == 1) then  -- one address, one owner
  redis.call('HSET', KEYS[3], ARGV[2], KEYS[1])
end
if tonumber(ARGV[1]) > 0 then redis.call('ZADD', KEYS[7], ARGV[1], KEYS[1]) end
return 'adopted'
"""

# Moves a record to a new phase only from one of the allowed ones; answers the phase it found.
# KEYS: record. ARGV: new phase, allowed phases joined by ",", write id, then field/value pairs.
# A retry of the same write (same write id, after a failover) answers what the first run found.
_TRANSITION = (
    _LISTED
    + """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return false end
if redis.call('HGET', KEYS[1], 'moved_by') == ARGV[3] then return redis.call('HGET', KEYS[1], 'moved_from') end
if listed(phase, ARGV[2]) then
  redis.call('HSET', KEYS[1], 'phase', ARGV[1], 'moved_by', ARGV[3], 'moved_from', phase, unpack(ARGV, 4))
end
return phase
"""
)

# Marks a record RUNNING at an address and maps the address to it in the SSH daemon's index, in one step,
# unless the address maps to another record that still holds it: the first owner keeps it. A holder whose
# server the caller saw gone (ports are reused) loses it, while its record stays; so does an earlier start
# of the same server (same hub, name and user), whose pod the Kubernetes backend replaces under the same name.
# KEYS: record, address index. ARGV: address ("": none, the server posts it to the hub itself), phases to
# start from and holding phases joined by ",",
# the key of a holder seen gone ("": none), a write id (a retry after a failover answers as the first
# run did), then field/value pairs.
# Answers the phase found, plus the holder's hub, name and start_id when refused.
_CLAIM = (
    _LISTED
    + """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return false end
if redis.call('HGET', KEYS[1], 'moved_by') == ARGV[5] then return {redis.call('HGET', KEYS[1], 'moved_from')} end
if not listed(phase, ARGV[2]) then return {phase} end
local holder = ARGV[1] ~= '' and redis.call('HGET', KEYS[2], ARGV[1])
if holder and holder ~= KEYS[1] and holder ~= ARGV[4] then
  local found = redis.call('HMGET', holder, 'phase', 'hub', 'name', 'start_id', 'user')
  local mine = redis.call('HMGET', KEYS[1], 'hub', 'name', 'user')
  local earlier = found[2] == mine[1] and found[3] == mine[2] and found[5] == mine[3]
  if found[1] and listed(found[1], ARGV[3]) and not earlier then return {phase, found[2], found[3], found[4]} end
end
redis.call('HSET', KEYS[1], 'phase', 'running', 'address', ARGV[1], 'moved_by', ARGV[5], 'moved_from', phase,
           unpack(ARGV, 6))
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], KEYS[1]) end
return {phase}
"""
)

# Marks a RUNNING record whose server is gone as ended and withdraws its address, in one step; answers
# whether it did (a second poll of the same ended server writes nothing).
# KEYS: record, address index. ARGV: new phase, then field/value pairs
_END = (
    _WITHDRAW
    + """
if redis.call('HGET', KEYS[1], 'phase') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'phase', ARGV[1], unpack(ARGV, 2))
withdraw(KEYS[1], KEYS[2])
return 1
"""
)


# A marker set once; its writer (the same write_id) hears "first" again when its command is repeated.
# KEYS: marker. ARGV: write_id, TTL in seconds
_ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return redis.call('GET', KEYS[1]) == ARGV[1] and 1 or 0
"""

# Replaces a field only if it still holds the value we read (a concurrent write wins).
# KEYS: hash. ARGV: field, expected value, new value
_REPLACE_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# KEYS: the address index. ARGV: "host:port". Answers hub, name, start_id, phase, or nothing.
_OWNER = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return false end
local found = redis.call('HMGET', record, 'hub', 'name', 'start_id', 'phase')
if not found[4] then return false end
return found
"""

# KEYS: record. ARGV: observed exit code ("" = running), observed timestamp
_OBSERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local before = tonumber(redis.call('HGET', KEYS[1], 'observed_at') or '0')
if tonumber(ARGV[2]) < before then return 0 end
redis.call('HSET', KEYS[1], 'observed', ARGV[1], 'observed_at', ARGV[2])
return 1
"""


# The same fields of many hashes in one command: an error (a key of the wrong type) is that key's answer.
_HMGET_MANY = """
local answers = {}
for i, key in ipairs(KEYS) do
  answers[i] = redis.pcall('HMGET', key, unpack(ARGV))
end
return answers
"""


class _ReadBatcher:
    """Poll reads share round trips under load: with no read in flight one goes out at once; the
    reads that arrive meanwhile wait for it and then go out together, as one script call (a
    pipeline of HMGETs would pack and parse a command per read)."""

    def __init__(self, client: aioredis.Redis, fields: Sequence[str]) -> None:
        self._redis = client
        self._fields = list(fields)
        self._hmget_many = client.register_script(_HMGET_MANY)
        self._busy = False
        self._queue: list[tuple[str, asyncio.Future[list[Any]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def hmget(self, key: str) -> list[Any]:
        if self._busy:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._queue.append((key, future))
            return await future
        self._busy = True
        try:
            values: list[Any] = await self._redis.hmget(key, self._fields)
            return values
        finally:
            if self._queue:  # the reads that came meanwhile go out without holding up this answer
                task = asyncio.get_running_loop().create_task(self._drain())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._busy = False

    async def _drain(self) -> None:
        """Send what queued up while a read was in flight, until nothing is left."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await self._hmget_many(keys=[key for key, _ in batch], args=self._fields)
                except Exception as exc:  # the connection failed: every read in the batch did
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller gave up waiting
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._busy = False


def _flatten(fields: dict[str, str | bytes]) -> list[str | bytes]:
    return [item for pair in fields.items() for item in pair]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


# Who recreates a service's tunnel. KEYS: claim. ARGV: claimer, TTL seconds. 1: this claimer holds it.
_CLAIM_TUNNEL = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# Daemons that start within this many seconds of each other share one recreation per service.
TUNNEL_CLAIM_SECONDS = 60


class Store:
    def __init__(self, client: aioredis.Redis, crypt: Crypt, replication: Replication = Replication()) -> None:
        self.redis = client
        self.crypt = crypt
        self.replication = replication
        self._once = client.register_script(_ONCE)
        self._observe = client.register_script(_OBSERVE)
        self._reads = _ReadBatcher(client, POLL_FIELDS)
        self._owner = client.register_script(_OWNER)
        self._replace_if = client.register_script(_REPLACE_IF)
        self._create = client.register_script(_CREATE)
        self._forget = client.register_script(_FORGET)
        self._adopt = client.register_script(_ADOPT)
        self._transition = client.register_script(_TRANSITION)
        self._claim = client.register_script(_CLAIM)
        self._end = client.register_script(_END)
        self._import = client.register_script(_IMPORT)

    # --- writes -------------------------------------------------------------------------------

    async def create(
        self,
        sid: ServiceId,
        *,
        user: str,
        user_id: str,
        flavor: str | None,
        body: dict[str, Any],
        certs: dict[str, Any] | None,
        limits: FlavorLimits,
        runtime_seconds: int | None = None,
    ) -> Created:
        """Store a PENDING record and take its slot, unless it exists or a limit is reached."""
        now = dt.datetime.now(dt.UTC)
        end = now + dt.timedelta(seconds=runtime_seconds) if runtime_seconds else None
        fields: dict[str, str | bytes] = {
            "hub": sid.hub, "name": sid.name, "start_id": sid.start_id, "user": user,
            "user_id": user_id, "flavor": flavor or "", "phase": Phase.PENDING.value,
            "start_date": _iso(now), "end_date": _iso(end) if end else "", "last_update": _iso(now),
            "exit_code": "", "address": "", "state_stored": "0", "body": self.crypt.encrypt_json(body),
        }  # fmt: skip
        keys = [key_record(sid), key_index(sid.hub), *self._slot_keys(sid.hub, user, flavor or ""), EXPIRY]
        args: list[str | bytes | int | float] = [
            limits.flavor_max,
            limits.per_user_max,
            limits.user_total_max,
        ]
        args += [end.timestamp() if end else 0, _write_id(), *_flatten(fields)]
        try:
            verdict, count = await self._acknowledged(self._create, keys, args)
        except ReplicasBehind:
            await self.undo_start(sid)
            raise
        if _text(verdict) != "ok":
            return Created(ok=False, refusal=_text(verdict), count=int(count))
        if certs:
            await self.redis.set(key_certs(sid), self.crypt.encrypt_json(certs), ex=CERTS_TTL_SECONDS)
        return Created(ok=True)

    async def import_running(self, record: ImportedRecord) -> str:
        """Store a server started elsewhere as RUNNING, holding its slots; answers "ok", "exists" or
        "address_taken" (and then writes nothing)."""
        sid = record.sid
        fields: dict[str, str | bytes] = {
            "hub": sid.hub, "name": sid.name, "start_id": sid.start_id, "user": record.user,
            "user_id": record.user_id, "flavor": record.flavor, "phase": Phase.RUNNING.value,
            "start_date": _iso(record.start_date), "end_date": _iso(record.end_date) if record.end_date else "",
            "last_update": _iso(record.last_update), "exit_code": "", "address": record.address,
            "state_stored": "1", "body": self.crypt.encrypt_json(record.body),
            "state": self.crypt.encrypt_json(record.state), "answer": self.crypt.encrypt_json(record.answer),
        }  # fmt: skip
        keys = [key_record(sid), key_index(sid.hub), *self._slot_keys(sid.hub, record.user, record.flavor), EXPIRY]
        end = record.end_date.timestamp() if record.end_date else 0
        verdict = await self._import(keys=[*keys, ADDRESSES], args=[end, record.address, *_flatten(fields)])
        return _text(verdict)

    async def transition(
        self, sid: ServiceId, to: Phase, allowed_from: Sequence[Phase], **fields: str | bytes
    ) -> Phase | None:
        """Atomically set `to` if the phase is one of `allowed_from`; returns the phase found."""
        fields["last_update"] = now_iso()
        found = await self._acknowledged(
            self._transition,
            [key_record(sid)],
            [to.value, ",".join(p.value for p in allowed_from), _write_id(), *_flatten(fields)],
        )
        return Phase(_text(found)) if found else None

    async def record_observed(self, sid: ServiceId, exit_code: int | None, at: float) -> bool:
        """Cache a status seen by an event (None: running) for polls; ignored for unknown services
        and for observations older than the one stored (events arrive out of order)."""
        stored = await self._observe(
            keys=[key_record(sid)], args=["" if exit_code is None else str(exit_code), repr(at)]
        )
        return bool(stored)

    async def save_backend_state(self, sid: ServiceId, state: dict[str, Any]) -> None:
        await self.redis.hset(
            key_record(sid),
            mapping={"state": self.crypt.encrypt_json(state), "state_stored": "1", "last_update": now_iso()},
        )

    async def mark_running(
        self, sid: ServiceId, address: str, answer: str, *, gone_holder: ServiceId | None = None
    ) -> Claim:
        """PENDING/STARTING -> RUNNING and publish the address ("host:port") for the SSH daemon, unless another
        record still holds it. `gone_holder`: a holder whose server the caller found gone; it loses the address."""
        fields: dict[str, str | bytes] = {"answer": self.crypt.encrypt_json(answer), "last_update": now_iso()}
        found = await self._acknowledged(
            self._claim,
            [key_record(sid), ADDRESSES],
            [
                address,
                f"{Phase.PENDING},{Phase.STARTING}",
                ",".join(HOLDING_PHASES),
                key_record(gone_holder) if gone_holder else "",
                _write_id(),
                *_flatten(fields),
            ],
        )
        if not found:
            return Claim(None)
        phase, *holder = (_text(value) for value in found)
        return Claim(Phase(phase), ServiceId(*holder) if holder else None)

    async def mark_ended(self, sid: ServiceId, exit_code: int) -> bool:
        """RUNNING -> STOPPED (exit code 0) or FAILED, and the address leaves the SSH daemon's index: what a
        poll that finds the server gone writes, once; False when the record was not RUNNING."""
        ended = Phase.STOPPED if exit_code == 0 else Phase.FAILED
        done = await self._end(
            keys=[key_record(sid), ADDRESSES],
            args=[ended.value, "exit_code", str(exit_code), "last_update", now_iso()],
        )
        return bool(done)

    async def forget(self, sid: ServiceId, *, acknowledged: bool = True) -> None:
        """Delete the record, its index entry, address and certs; free its slot exactly once.
        `acknowledged=False`: do not wait for replicas (undoing a write they did not acknowledge)."""
        meta = await self.meta(sid)
        slot_keys = self._slot_keys(sid.hub, meta.user if meta else "", meta.flavor if meta else "")
        keys = [key_record(sid), key_index(sid.hub), key_certs(sid), ADDRESSES, *slot_keys, EXPIRY, key_tombstone(sid)]
        if acknowledged:
            await self._acknowledged(self._forget, keys, [TOMBSTONE_TTL_SECONDS])
        else:
            await self._forget(keys=keys, args=[TOMBSTONE_TTL_SECONDS])

    async def tombstone(self, sid: ServiceId) -> None:
        """The hub stopped a service this outpost does not know: never re-adopt a server of it."""
        await self.redis.set(key_tombstone(sid), "1", ex=TOMBSTONE_TTL_SECONDS)

    async def stopped(self, sid: ServiceId) -> bool:
        """Whether a stop of this service left its tombstone (its server is never re-adopted)."""
        return bool(await self.redis.exists(key_tombstone(sid)))

    async def identity(self, sid: ServiceId) -> str:
        """What a lost record of this running service is rebuilt from, sealed with the Fernet key."""
        values = await self.redis.hmget(key_record(sid), [*IDENTITY_FIELDS, "body", "answer"])
        plain = {name: _text(value) for name, value in zip(IDENTITY_FIELDS, values, strict=False)}
        body, answer = values[-2:]
        return self.crypt.encrypt_json(
            {
                **plain,
                "body": self.crypt.decrypt_json(body) if body else {},
                "answer": self.crypt.decrypt_json(answer) if answer else "",
            }
        ).decode()

    async def adopt(self, sid: ServiceId, sealed: str, state: dict[str, Any]) -> str:
        """Rebuild the RUNNING record of a server whose record is gone, from its sealed identity;
        answers "adopted", or "exists" / "stopped" (a record, or a stop's tombstone, is there)."""
        identity = self.crypt.decrypt_json(sealed)
        plain = {name: str(identity.get(name, "")) for name in IDENTITY_FIELDS}
        fields: dict[str, str | bytes] = {
            **plain, "hub": sid.hub, "name": sid.name, "start_id": sid.start_id, "phase": Phase.RUNNING.value,
            "last_update": now_iso(), "exit_code": "", "state_stored": "1",
            "body": self.crypt.encrypt_json(identity.get("body", {})),
            "answer": self.crypt.encrypt_json(identity.get("answer", "")),
            "state": self.crypt.encrypt_json(state),
        }  # fmt: skip
        end = dt.datetime.fromisoformat(plain["end_date"]).timestamp() if plain["end_date"] else 0
        keys = [
            key_record(sid),
            key_index(sid.hub),
            ADDRESSES,
            *self._slot_keys(sid.hub, plain["user"], plain["flavor"]),
        ]
        verdict = await self._acknowledged(
            self._adopt, [*keys, EXPIRY, key_tombstone(sid)], [end, plain["address"], *_flatten(fields)]
        )
        return _text(verdict)

    async def undo_start(self, sid: ServiceId) -> None:
        """Forget a start the replicas did not acknowledge; what this fails to undo, the reconciler does."""
        try:
            await self.forget(sid, acknowledged=False)
        except Exception as exc:  # Redis failed again: the reconciler cleans up records stuck starting
            log.warning("could not undo the unacknowledged start of %s (%s)", sid, type(exc).__name__)

    async def once(self, marker: str, ttl_seconds: int = 86400) -> bool:
        """True the first time a marker is seen (CloudEvents are delivered at least once)."""
        return bool(await self._once(keys=[f"outpost:once:{marker}"], args=[_write_id(), ttl_seconds]))

    async def _acknowledged(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a write the hub is answered for. With replicas required, WAIT for them on the same
        connection (WAIT counts the replication of that connection's writes) and raise ReplicasBehind
        when too few acknowledge in time; the write itself is done on the primary either way."""
        wanted = self.replication.replicas
        if not wanted:
            return await script(keys=keys, args=args)
        try:
            result, acknowledged = await self._with_wait(script, keys, args)
        except NoScriptError:  # the pipeline was retried on a new primary that never saw the script
            result, acknowledged = await self._with_wait(script, keys, args)
        if acknowledged < wanted:
            log.warning("%s of %s Redis replicas acknowledged a write in time", acknowledged, wanted)
            # This may be a primary that a planned failover left writable for a while: the next
            # connection asks the sentinels again.
            await self.redis.connection_pool.disconnect(inuse_connections=False)
            raise ReplicasBehind()
        return result

    async def _with_wait(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            pipe.wait(self.replication.replicas, self.replication.timeout_ms)
            result, acknowledged = await pipe.execute()
        return result, int(acknowledged)

    # --- reads --------------------------------------------------------------------------------

    async def meta(self, sid: ServiceId) -> ServiceMeta | None:
        values = await self.redis.hmget(key_record(sid), PLAIN_FIELDS)
        return _meta(values)

    async def poll_view(self, sid: ServiceId) -> tuple[ServiceMeta, dict[str, Any] | None] | None:
        """Metadata plus the decrypted backend state, in one round trip; the body stays encrypted."""
        values = await self.redis.hmget(key_record(sid), [*PLAIN_FIELDS, "state"])
        meta = _meta(values[:-1])
        if meta is None:
            return None
        state = self.crypt.decrypt_json(values[-1]) if values[-1] else None
        return meta, state

    async def poll_record(self, sid: ServiceId) -> PollView | None:
        """Only what `GET /services/{name}/{start_id}` needs, in one round trip."""
        phase, exit_code, observed, observed_at, token = await self._reads.hmget(key_record(sid))
        if phase is None:
            return None
        return PollView(
            phase=Phase(_text(phase)),
            exit_code=int(exit_code) if exit_code else None,
            observed_exit=int(observed) if observed else None,
            observed_at=float(observed_at or 0),
            state=self.crypt.decrypt_json(token, cached=True) if token else None,
        )

    async def secrets(self, sid: ServiceId) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
        """The decrypted request body, backend state and start answer."""
        body, state, answer = await self.redis.hmget(key_record(sid), ["body", "state", "answer"])
        return (
            self.crypt.decrypt_json(body) if body else {},
            self.crypt.decrypt_json(state) if state else None,
            self.crypt.decrypt_json(answer) if answer else "",
        )

    async def take_certs(self, sid: ServiceId) -> dict[str, Any]:
        """Read and delete the pending certs; two commands, so a repeated command loses nothing."""
        token = await self.redis.get(key_certs(sid))
        await self.redis.delete(key_certs(sid))
        return self.crypt.decrypt_json(token) if token else {}

    async def list_hub(self, hub: str) -> list[ServiceMeta]:
        return await self._metas(sorted(_text(k) for k in await self.redis.smembers(key_index(hub))))

    async def _metas(self, keys: Sequence[bytes | str]) -> list[ServiceMeta]:
        """The metadata of many records in one round trip."""
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(_text(key), PLAIN_FIELDS)
            rows = await pipe.execute()
        return [meta for meta in map(_meta, rows) if meta is not None]

    async def all_hubs_services(self) -> AsyncIterator[ServiceMeta]:
        async for record_key in self.record_keys():
            meta = _meta(await self.redis.hmget(record_key, PLAIN_FIELDS))
            if meta is not None:
                yield meta

    async def expired(self, now: dt.datetime) -> list[ServiceMeta]:
        """Services whose runtime limit has passed."""
        keys = await self.redis.zrangebyscore(EXPIRY, "-inf", now.timestamp())
        return await self._metas([_text(key) for key in keys if isinstance(key, bytes | str)])

    async def record_keys(self) -> AsyncIterator[str]:
        """Every service record of every hub (for administration: rotation, reconciling)."""
        async for index in self.redis.scan_iter(match="outpost:hub:*:services", count=500):
            for key in await self.redis.smembers(index):
                yield _text(key)

    async def rotate_record(self, record_key: str) -> int:
        """Re-encrypt a record's fields (and its pending certs) under the first key; returns how
        many fields changed. Fields the first key already reads are left alone, so runs resume."""
        rotated = 0
        targets = [(record_key, field) for field in ENCRYPTED_FIELDS] + [(record_key + ":certs", None)]
        for key, field in targets:
            token = await (self.redis.hget(key, field) if field else self.redis.get(key))
            if not token or self.crypt.readable_by_first_key(token):
                continue
            new = self.crypt.rotate(token)
            if field:
                rotated += int(await self._replace_if(keys=[key], args=[field, token, new]))
            else:  # certs live for minutes only; keep the remaining time
                rotated += int(bool(await self.redis.set(key, new, xx=True, keepttl=True)))
        return rotated

    @contextlib.asynccontextmanager
    async def exclusively(self, name: str, ttl_seconds: float) -> AsyncIterator[bool]:
        """A non-blocking lock that expires by itself: yields False when another run holds it,
        so overlapping timer runs do nothing twice."""
        lock = self.redis.lock(f"outpost:lock:{name}", timeout=ttl_seconds, blocking=False)
        if not await lock.acquire():
            yield False
            return
        try:
            yield True
        finally:
            try:
                await lock.release()
            except LockError:
                log.warning("lock %s outlived its %ss", name, ttl_seconds)

    async def claim_tunnel_recreation(
        self, sid: ServiceId, claimer: str, ttl_seconds: int = TUNNEL_CLAIM_SECONDS
    ) -> bool:
        """A short lock per service, taken by the first daemon to recreate its tunnel: daemons starting
        together post each setup-tunnel once between them. The same daemon (`claimer`: host and port)
        takes it again at once, since a restarted daemon's tunnels died with it."""
        claim = self.redis.register_script(_CLAIM_TUNNEL)
        return bool(await claim(keys=[key_tunnel_claim(sid)], args=[claimer, ttl_seconds]))

    async def flavor_counts(self, flavors: Sequence[str]) -> dict[str, int]:
        if not flavors:
            return {}
        values = await self.redis.mget([key_flavor_slots(f) for f in flavors])
        return {f: int(v or 0) for f, v in zip(flavors, values, strict=True)}

    async def usage(self, hub: str, user: str, flavor: str) -> tuple[int, int, int]:
        """(slots of the flavor, of this user in the flavor, of this user in all flavors): one MGET."""
        keys = [key_flavor_slots(flavor), key_user_slots(hub, user, flavor), key_user_slots(hub, user)]
        flavor_total, mine, total = await self.redis.mget(keys)
        return int(flavor_total or 0), int(mine or 0), int(total or 0)

    async def address_owner(self, host: str, port: int) -> AddressOwner | None:
        """Who runs a server at host:port: one round trip, since the SSH daemon asks per channel."""
        found = await self._owner(keys=[ADDRESSES], args=[f"{host}:{port}"])
        if not found:
            return None
        hub, name, start_id, phase = (_text(v) for v in found)
        return AddressOwner(hub, name, start_id, Phase(phase))

    async def running_tunnels(self) -> AsyncIterator[TunnelTarget]:
        async for meta in self.all_hubs_services():
            if meta.phase != Phase.RUNNING:
                continue
            try:
                body, _, answer = await self.secrets(meta.id)
            except UndecryptableRecord:
                log.warning("cannot recreate the tunnel of %s: its record cannot be decrypted", meta.id)
                continue
            env = body.get("env", {})
            url, token = env.get("JUPYTERHUB_SETUPTUNNEL_URL", ""), env.get("JUPYTERHUB_API_TOKEN", "")
            if answer and url and token:
                yield TunnelTarget(meta.id, answer, url, token)

    def _slot_keys(self, hub: str, user: str, flavor: str) -> list[str]:
        return [key_flavor_slots(flavor), key_user_slots(hub, user, flavor), key_user_slots(hub, user)]


def _meta(values: Sequence[bytes | str | None]) -> ServiceMeta | None:
    row = dict(zip(PLAIN_FIELDS, (_text(v) if v is not None else None for v in values), strict=True))
    if row["phase"] is None or row["hub"] is None:
        return None
    exit_code, observed = row["exit_code"], row["observed"]
    return ServiceMeta(
        id=ServiceId(row["hub"] or "", row["name"] or "", row["start_id"] or ""),
        user=row["user"] or "",
        user_id=row["user_id"] or "",
        flavor=row["flavor"] or "",
        phase=Phase(row["phase"]),
        start_date=row["start_date"] or "",
        end_date=row["end_date"] or "",
        last_update=row["last_update"] or "",
        exit_code=int(exit_code) if exit_code not in (None, "") else None,
        address=row["address"] or "",
        state_stored=row["state_stored"] == "1",
        observed_exit=int(observed) if observed not in (None, "") else None,
        observed_at=float(row["observed_at"] or 0),
    )

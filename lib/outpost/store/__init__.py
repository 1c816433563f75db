"""The one door to Redis: service records, slots, the SSH daemon's address index, markers, locks, login counters.

`keys` holds the layout and the Lua scripts, `records` the record types and encoding, `batcher` the shared
poll reads, `lock` the timer's lock, `logins` the failed-login counters, `snapshots` what one process reads
for all (the Slurm job list). Nothing outside this package talks to Redis.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, NoScriptError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from outpost.crypto import Crypt
from outpost.errors import ReplicasBehind
from outpost.flavors import FlavorLimits
from outpost.models import Phase, ServiceId, ServiceMeta
from outpost.redis_client import reply
from outpost.store import lock
from outpost.store.batcher import ReadBatcher
from outpost.store.keys import (
    ADDRESS_CHANGES,
    ADDRESSES,
    ADOPT,
    ALLOCATE_UID,
    CERTS_TTL_SECONDS,
    CLAIM,
    CLAIM_TUNNEL,
    CREATE,
    END,
    EXPIRY,
    FORGET,
    HUB_UIDS,
    IMPORT,
    MARK_TUNNELLED,
    OBSERVE,
    ONCE,
    OWNER,
    RECORD_INDEXES,
    REPLACE_IF,
    TOMBSTONE_TTL_SECONDS,
    TRANSITION,
    TUNNEL_CLAIM_SECONDS,
    UID_HUBS,
    key_certs,
    key_flavor_slots,
    key_index,
    key_once,
    key_record,
    key_tombstone,
    key_tunnel_claim,
    slot_keys,
)
from outpost.store.logins import LoginCounters
from outpost.store.records import (
    ENCRYPTED_FIELDS,
    HOLDING_PHASES,
    IDENTITY_FIELDS,
    PLAIN_FIELDS,
    POLL_FIELDS,
    AddressOwner,
    Claim,
    Created,
    Gauges,
    ImportedRecord,
    MetaAndState,
    PollRecord,
    SealedValue,
    Secrets,
    Usage,
    decode_meta,
    flatten,
    iso,
    now_iso,
    text,
    write_id,
)
from outpost.store.snapshots import SharedSnapshots

__all__ = [
    "AddressOwner",
    "Claim",
    "Created",
    "Gauges",
    "ImportedRecord",
    "LoginCounters",
    "MetaAndState",
    "PollRecord",
    "Replication",
    "SealedValue",
    "Secrets",
    "Store",
    "Usage",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replication:
    """How many replicas must acknowledge a write the hub is answered for, and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 1000


# How long one wait for a pub/sub message lasts: shorter than the socket timeout, so a quiet channel is no error.
PUBSUB_WAIT_SECONDS = 1.0

# What a command raises when Redis cannot be reached, or the node is no longer the primary (a failover):
# whether a write in flight took effect is unknown.
UNREACHABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError)
# What a write the hub is answered 503 for raises: not acknowledged by the replicas, or not known to be written.
UNACKNOWLEDGED: tuple[type[Exception], ...] = (ReplicasBehind, *UNREACHABLE)


class Store:
    """Service records and everything that points at them (index, slots, addresses, expiry, tombstones), plus
    the markers, locks and counters the rest of the outpost keeps in Redis."""

    def __init__(self, client: aioredis.Redis, crypt: Crypt, replication: Replication = Replication()) -> None:
        self._redis = client
        self.crypt = crypt
        self.logins = LoginCounters(client)
        self.snapshots = SharedSnapshots(client)
        self.replication = replication
        self._once = client.register_script(ONCE)
        self._observe = client.register_script(OBSERVE)
        self._reads = ReadBatcher(client, POLL_FIELDS)
        self._owner = client.register_script(OWNER)
        self._replace_if = client.register_script(REPLACE_IF)
        self._create = client.register_script(CREATE)
        self._forget = client.register_script(FORGET)
        self._adopt = client.register_script(ADOPT)
        self._transition = client.register_script(TRANSITION)
        self._claim = client.register_script(CLAIM)
        self._end = client.register_script(END)
        self._import = client.register_script(IMPORT)
        self._claim_tunnel = client.register_script(CLAIM_TUNNEL)
        self._allocate_uid = client.register_script(ALLOCATE_UID)
        self._mark_tunnelled = client.register_script(MARK_TUNNELLED)

    async def ping(self) -> None:
        """Fail now when Redis cannot be reached (at a process's start, in `outpost check`)."""
        await reply(self._redis.ping())

    async def aclose(self) -> None:
        await self._redis.aclose()

    @property
    def connection_pool(self) -> ConnectionPool:
        """The pool every command waits on (its size, and dropping its connections, are the operator's and
        the failover tests' business; commands still go through the methods here)."""
        return self._redis.connection_pool

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
        """Store a PENDING record and take its slot, unless a limit is reached or it exists: the one decision
        on a start's quota, made by the create script (`keys.CREATE`) with the counts of that moment."""
        now = dt.datetime.now(dt.UTC)
        end = now + dt.timedelta(seconds=runtime_seconds) if runtime_seconds else None
        fields: dict[str, str | bytes] = {
            "hub": sid.hub, "name": sid.name, "start_id": sid.start_id, "user": user,
            "user_id": user_id, "flavor": flavor or "", "phase": Phase.PENDING.value,
            "start_date": iso(now), "end_date": iso(end) if end else "", "last_update": iso(now),
            "exit_code": "", "address": "", "state_stored": "0", "body": self.crypt.encrypt_json(body),
        }  # fmt: skip
        keys = [key_record(sid), key_index(sid.hub), *slot_keys(sid.hub, user, flavor or ""), EXPIRY]
        args: list[str | bytes | int | float] = [
            limits.flavor_max,
            limits.per_user_max,
            limits.user_total_max,
        ]
        args += [end.timestamp() if end else 0, write_id(), *flatten(fields)]
        try:
            verdict, count = await self._acknowledged(self._create, keys, args)
        except UNACKNOWLEDGED:  # the hub hears 503: a start it was refused takes no slot
            await self.undo_start(sid)
            raise
        if text(verdict) != "ok":
            return Created(ok=False, refusal=text(verdict), count=int(count))
        if certs:
            await self._redis.set(key_certs(sid), self.crypt.encrypt_json(certs), ex=CERTS_TTL_SECONDS)
        return Created(ok=True)

    async def import_running(self, record: ImportedRecord) -> str:
        """Store a server started elsewhere as RUNNING, holding its slots; answers "ok", "exists" or
        "address_taken" (and then writes nothing)."""
        sid = record.sid
        fields: dict[str, str | bytes] = {
            "hub": sid.hub, "name": sid.name, "start_id": sid.start_id, "user": record.user,
            "user_id": record.user_id, "flavor": record.flavor, "phase": Phase.RUNNING.value,
            "start_date": iso(record.start_date), "end_date": iso(record.end_date) if record.end_date else "",
            "last_update": iso(record.last_update), "exit_code": "", "address": record.address,
            "state_stored": "1", "body": self.crypt.encrypt_json(record.body),
            "state": self.crypt.encrypt_json(record.state), "answer": self.crypt.encrypt_json(record.answer),
        }  # fmt: skip
        keys = [key_record(sid), key_index(sid.hub), *slot_keys(sid.hub, record.user, record.flavor), EXPIRY]
        end = record.end_date.timestamp() if record.end_date else 0
        verdict = await self._import(keys=[*keys, ADDRESSES], args=[end, record.address, *flatten(fields)])
        return text(verdict)

    async def transition(
        self, sid: ServiceId, to: Phase, allowed_from: Sequence[Phase], **fields: str | bytes
    ) -> Phase | None:
        """Atomically set `to` if the phase is one of `allowed_from`; returns the phase found."""
        fields["last_update"] = now_iso()
        found = await self._acknowledged(
            self._transition,
            [key_record(sid)],
            [to.value, ",".join(p.value for p in allowed_from), write_id(), *flatten(fields)],
        )
        return Phase(text(found)) if found else None

    async def record_observed(self, sid: ServiceId, exit_code: int | None, at: float) -> bool:
        """Cache a status seen by an event (None: running) for polls; ignored for unknown services
        and for observations older than the one stored (events arrive out of order)."""
        stored = await self._observe(
            keys=[key_record(sid)], args=["" if exit_code is None else str(exit_code), repr(at)]
        )
        return bool(stored)

    async def save_backend_state(self, sid: ServiceId, state: dict[str, Any]) -> None:
        await reply(
            self._redis.hset(
                key_record(sid),
                mapping={"state": self.crypt.encrypt_json(state), "state_stored": "1", "last_update": now_iso()},
            )
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
                write_id(),
                *flatten(fields),
            ],
        )
        if not found:
            return Claim(None)
        phase, *holder = (text(value) for value in found)
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
        slots = slot_keys(sid.hub, meta.user if meta else "", meta.flavor if meta else "")
        keys = [key_record(sid), key_index(sid.hub), key_certs(sid), ADDRESSES, *slots, EXPIRY, key_tombstone(sid)]
        if acknowledged:
            await self._acknowledged(self._forget, keys, [TOMBSTONE_TTL_SECONDS])
        else:
            await self._forget(keys=keys, args=[TOMBSTONE_TTL_SECONDS])

    async def tombstone(self, sid: ServiceId) -> None:
        """The hub stopped a service this outpost does not know: never re-adopt a server of it."""
        await self._redis.set(key_tombstone(sid), "1", ex=TOMBSTONE_TTL_SECONDS)

    async def exists(self, sid: ServiceId) -> bool:
        """Whether a record of this service is stored (in any phase)."""
        return bool(await self._redis.exists(key_record(sid)))

    async def stopped(self, sid: ServiceId) -> bool:
        """Whether a stop of this service left its tombstone (its server is never re-adopted)."""
        return bool(await self._redis.exists(key_tombstone(sid)))

    async def identity(self, sid: ServiceId) -> str:
        """What a lost record of this running service is rebuilt from, sealed with the Fernet key."""
        values = await reply(self._redis.hmget(key_record(sid), [*IDENTITY_FIELDS, "body", "answer"]))
        plain = {name: text(value) for name, value in zip(IDENTITY_FIELDS, values, strict=False)}
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
            *slot_keys(sid.hub, plain["user"], plain["flavor"]),
        ]
        verdict = await self._acknowledged(
            self._adopt, [*keys, EXPIRY, key_tombstone(sid)], [end, plain["address"], *flatten(fields)]
        )
        return text(verdict)

    async def undo_start(self, sid: ServiceId) -> None:
        """Forget a start the replicas did not acknowledge, or whose write Redis may not have made (a failover);
        what this fails to undo, the hub's stop of the start it was refused or the reconciler does."""
        try:
            await self.forget(sid, acknowledged=False)
        except Exception as exc:  # Redis failed again: the reconciler cleans up records stuck starting
            log.warning("could not undo the refused start of %s (%s)", sid, type(exc).__name__)

    async def once(self, marker: str, ttl_seconds: int = 86400) -> bool:
        """True the first time a marker is seen (CloudEvents are delivered at least once)."""
        return bool(await self._once(keys=[key_once(marker)], args=[write_id(), ttl_seconds]))

    async def seen(self, marker: str) -> bool:
        """Whether `once(marker)` was called already: an event delivered again is done."""
        return bool(await self._redis.exists(key_once(marker)))

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
            await self._redis.connection_pool.disconnect(inuse_connections=False)
            raise ReplicasBehind()
        return result

    async def _with_wait(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            pipe.wait(self.replication.replicas, self.replication.timeout_ms)
            result, acknowledged = await pipe.execute()
        return result, int(acknowledged)

    async def hub_uid(self, hub: str, first: int, last: int, skip: Sequence[int]) -> int | None:
        """The uid a hub's local servers run as, from first..last and never one in `skip`: allocated once, in
        one script, so every outpost process gives a hub the same uid and no two hubs one. None: all are taken."""
        uid = int(await self._acknowledged(self._allocate_uid, [HUB_UIDS, UID_HUBS], [hub, first, last, *skip]))
        return None if uid < 0 else uid

    # --- reads --------------------------------------------------------------------------------

    async def meta(self, sid: ServiceId) -> ServiceMeta | None:
        values = await reply(self._redis.hmget(key_record(sid), list(PLAIN_FIELDS)))
        return decode_meta(values)

    async def meta_and_state(self, sid: ServiceId) -> MetaAndState | None:
        """Metadata plus the decrypted backend state, in one round trip; the body stays encrypted."""
        values = await reply(self._redis.hmget(key_record(sid), [*PLAIN_FIELDS, "state"]))
        meta = decode_meta(values[:-1])
        if meta is None:
            return None
        state = self.crypt.decrypt_json(values[-1]) if values[-1] else None
        return MetaAndState(meta, state)

    async def poll_record(self, sid: ServiceId) -> PollRecord | None:
        """Only what `GET /services/{name}/{start_id}` needs, in one round trip."""
        phase, exit_code, observed, observed_at, token = await self._reads.hmget(key_record(sid))
        if phase is None:
            return None
        return PollRecord(
            phase=Phase(text(phase)),
            exit_code=int(exit_code) if exit_code else None,
            observed_exit=int(observed) if observed else None,
            observed_at=float(observed_at or 0),
            state=self.crypt.decrypt_json(token, cached=True) if token else None,
        )

    async def secrets(self, sid: ServiceId) -> Secrets:
        """The decrypted request body, backend state and start answer."""
        body, state, answer = await reply(self._redis.hmget(key_record(sid), ["body", "state", "answer"]))
        return Secrets(
            self.crypt.decrypt_json(body) if body else {},
            self.crypt.decrypt_json(state) if state else None,
            self.crypt.decrypt_json(answer) if answer else "",
        )

    async def take_certs(self, sid: ServiceId) -> dict[str, Any]:
        """Read and delete the pending certs; two commands, so a repeated command loses nothing."""
        token = await self._redis.get(key_certs(sid))
        await self._redis.delete(key_certs(sid))
        return self.crypt.decrypt_json(token) if token else {}

    async def list_hub(self, hub: str) -> list[ServiceMeta]:
        return await self._metas(sorted(text(k) for k in await reply(self._redis.smembers(key_index(hub)))))

    async def _metas(self, keys: Sequence[bytes | str]) -> list[ServiceMeta]:
        """The metadata of many records in one round trip."""
        if not keys:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(text(key), list(PLAIN_FIELDS))
            rows = await pipe.execute()
        return [meta for meta in map(decode_meta, rows) if meta is not None]

    async def all_hubs_services(self) -> AsyncIterator[ServiceMeta]:
        async for record_key in self.record_keys():
            meta = decode_meta(await reply(self._redis.hmget(record_key, list(PLAIN_FIELDS))))
            if meta is not None:
                yield meta

    async def expired(self, now: dt.datetime) -> list[ServiceMeta]:
        """Services whose runtime limit has passed."""
        keys = await self._redis.zrangebyscore(EXPIRY, "-inf", now.timestamp())
        return await self._metas([text(key) for key in keys if isinstance(key, bytes | str)])

    async def record_keys(self) -> AsyncIterator[str]:
        """Every service record of every hub (for administration: rotation, reconciling)."""
        async for index in self._redis.scan_iter(match=RECORD_INDEXES, count=500):
            for key in await reply(self._redis.smembers(index)):
                yield text(key)

    async def sealed_values(self, record_key: str) -> list[SealedValue]:
        """A record's encrypted fields and its pending certs, as stored (for `outpost.rotation`)."""
        certs = record_key + ":certs"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(record_key, list(ENCRYPTED_FIELDS))
            pipe.get(certs)
            fields, pending = await pipe.execute()
        found = [SealedValue(record_key, name, token) for name, token in zip(ENCRYPTED_FIELDS, fields, strict=True)]
        return [value for value in [*found, SealedValue(certs, None, pending)] if value.token]

    async def reseal(self, value: SealedValue, token: bytes) -> bool:
        """Replace a sealed value by `token` unless a concurrent write changed it since it was read."""
        if value.field:
            return bool(await self._replace_if(keys=[value.key], args=[value.field, value.token, token]))
        # certs live for minutes only; keep the remaining time
        return bool(await self._redis.set(value.key, token, xx=True, keepttl=True))

    def exclusively(self, name: str, ttl_seconds: float) -> AbstractAsyncContextManager[bool]:
        """A non-blocking lock that expires by itself: yields False when another run holds it,
        so overlapping timer runs do nothing twice."""
        return lock.exclusively(self._redis, name, ttl_seconds)

    async def claim_tunnel_recreation(
        self, sid: ServiceId, claimer: str, ttl_seconds: int = TUNNEL_CLAIM_SECONDS
    ) -> bool:
        """A short lock per service, taken by the first daemon to recreate its tunnel: daemons starting
        together post each setup-tunnel once between them. The same daemon (`claimer`: host and port)
        takes it again at once, since a restarted daemon's tunnels died with it."""
        return bool(await self._claim_tunnel(keys=[key_tunnel_claim(sid)], args=[claimer, ttl_seconds]))

    async def mark_tunnelled(self, sid: ServiceId) -> bool:
        """Remember that the hub reaches this service through an SSH tunnel (`ServiceMeta.tunnelled`), so a
        restarted daemon asks the hub to rebuild it; False when the record is gone."""
        return bool(await self._mark_tunnelled(keys=[key_record(sid)]))

    async def flavor_counts(self, flavors: Sequence[str]) -> dict[str, int]:
        if not flavors:
            return {}
        values = await self._redis.mget([key_flavor_slots(f) for f in flavors])
        return {f: int(v or 0) for f, v in zip(flavors, values, strict=True)}

    async def usage(self, hub: str, user: str, flavor: str) -> Usage:
        """The slots a start of this user and flavor is counted against: one MGET."""
        flavor_total, mine, total = await self._redis.mget(slot_keys(hub, user, flavor))
        return Usage(int(flavor_total or 0), int(mine or 0), int(total or 0))

    async def gauges(self, hubs: Sequence[str], flavors: Sequence[str]) -> Gauges:
        """Services stored per hub and slots held per flavor, in one round trip (for /metrics)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for hub in hubs:
                pipe.scard(key_index(hub))
            for flavor in flavors:
                pipe.get(key_flavor_slots(flavor))
            values = await pipe.execute()
        services = {hub: int(count) for hub, count in zip(hubs, values[: len(hubs)], strict=True)}
        slots = {flavor: int(count or 0) for flavor, count in zip(flavors, values[len(hubs) :], strict=True)}
        return Gauges(services, slots)

    async def address_owner(self, host: str, port: int) -> AddressOwner | None:
        """Who runs a server at host:port: one round trip, since the SSH daemon asks per channel."""
        found = await self._owner(keys=[ADDRESSES], args=[f"{host}:{port}"])
        if not found:
            return None
        hub, name, start_id, phase = (text(v) for v in found)
        return AddressOwner(hub, name, start_id, Phase(phase))

    async def address_changes(self) -> AsyncIterator[str | None]:
        """What the writes above publish for the SSH daemons' caches: an address ("host:port") whose owner or
        owner's phase may have changed, and None once subscribed (what was cached before may be stale).

        Raises when the subscription breaks, at once: its connection does not reconnect behind the caller's
        back (redis-py's retry would, and the messages published meanwhile would be lost unnoticed)."""
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(ADDRESS_CHANGES)
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # untyped before redis-py 8
            raise
        connection = pubsub.connection
        assert connection is not None
        shared_retry = connection.retry
        connection.retry = Retry(NoBackoff(), 0)
        try:
            while True:
                message = await pubsub.get_message(timeout=PUBSUB_WAIT_SECONDS)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    yield None
                elif message["type"] == "message":
                    yield text(message["data"])
        finally:
            connection.retry = shared_retry  # the connection goes back to the pool, for commands that retry
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # untyped before redis-py 8

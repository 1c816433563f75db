"""What a service record holds and how its fields are encoded: the record types the store answers with."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from outpost.models import ACTIVE_PHASES, Phase, ServiceId, ServiceMeta

PLAIN_FIELDS = (
    "hub", "name", "start_id", "user", "user_id", "flavor", "phase",
    "start_date", "end_date", "last_update", "exit_code", "address", "state_stored",
    "observed", "observed_at", "tunnelled",
)  # fmt: skip
ENCRYPTED_FIELDS = ("body", "state", "answer")
# What a backend keeps with a server (sealed) so that a lost record can be rebuilt from it.
IDENTITY_FIELDS = ("user", "user_id", "flavor", "start_date", "end_date", "address")
# What a poll reads: the phase and exit code, the status an event observed, the backend state.
POLL_FIELDS = ("phase", "exit_code", "observed", "observed_at", "state")
# Records in these phases keep their address against a newcomer: their server may still be there.
HOLDING_PHASES = (*sorted(ACTIVE_PHASES), Phase.STOPPING)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def now_iso() -> str:
    return iso(dt.datetime.now(dt.UTC))


def write_id() -> str:
    """A random id a write carries, by which its script recognises its own repeated run."""
    return secrets.token_hex(8)


def flatten(fields: dict[str, str | bytes]) -> list[str | bytes]:
    """Field/value pairs as a script's arguments."""
    return [item for pair in fields.items() for item in pair]


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def decode_meta(values: Sequence[bytes | str | None]) -> ServiceMeta | None:
    """A record's PLAIN_FIELDS, as HMGET answers them; None when there is no record."""
    row = dict(zip(PLAIN_FIELDS, (text(v) if v is not None else None for v in values), strict=True))
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
        tunnelled=row["tunnelled"] == "1",
    )


@dataclass(frozen=True)
class Created:
    """The create script's one answer to a start: `refusal` is "exists" or the limit reached (a
    `outpost.flavors.Refusal` value), `count` the servers that reached it."""

    ok: bool
    refusal: str = ""
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
class PollRecord:
    """Only what `GET /services/{name}/{start_id}` needs."""

    phase: Phase
    exit_code: int | None
    observed_exit: int | None
    observed_at: float
    state: dict[str, Any] | None


class MetaAndState(NamedTuple):
    """A record's metadata plus its decrypted backend state (None before the backend stored one)."""

    meta: ServiceMeta
    state: dict[str, Any] | None


class Secrets(NamedTuple):
    """A record's decrypted fields: the start request's body, the backend state, the start answer."""

    body: dict[str, Any]
    state: dict[str, Any] | None
    answer: str


class Usage(NamedTuple):
    """Slots held now: of the flavor (all hubs), of the user in that flavor, of the user in total."""

    flavor_total: int = 0
    user_flavor: int = 0
    user_total: int = 0


class Gauges(NamedTuple):
    """What /metrics shows from Redis: services stored per hub, slots held per flavor."""

    services: dict[str, int]
    flavor_slots: dict[str, int]


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
class SealedValue:
    """An encrypted value as stored, for key rotation: in a record's `field`, or a string key (`field` None)."""

    key: str
    field: str | None
    token: bytes

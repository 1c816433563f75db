"""`outpost import-upstream`: the running servers of an upstream Outpost become RUNNING records here, so
hubs keep polling and stopping them after the switch (with the spawner backend and the same class).

Reads upstream's `service` table with SQLAlchemy Core (sqlite, or PostgreSQL with the `postgresql`
extra's driver) and decrypts its Fernet tokens with OUTPOST_CRYPT_KEY. An import is a start: each row
passes the start's checks of `env`, `misc` and callback URLs (`outpost.lifecycle.start.screened`), its
address is never one of the outpost's own listeners nor one another row names, and the backend proves
the server serves it before it is published; a row that fails is reported and skipped. Each record is
written whole by one Redis script, or not at all, never over another record's address; a record
already here is left alone, so a second run changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import ValidationError

from outpost.errors import ConfigurationError, OutpostError, UndecryptableRecord
from outpost.lifecycle.notes import callback_notes
from outpost.lifecycle.start import screened
from outpost.models import ServiceId, StartRequest
from outpost.store import ImportedRecord

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from outpost.backends.spawner import SpawnerBackend
    from outpost.crypto import Crypt
    from outpost.runtime import Runtime
    from outpost.settings import Settings

REQUIRED = (
    "name",
    "start_id",
    "jupyterhub_username",
    "state_stored",
    "stop_pending",
    "body",
    "state",
    "start_response",
)
OPTIONAL = ("id", "start_date", "end_date", "last_update", "jupyterhub_user_id", "flavor")
SQLITE_TYPES = ("sqlite", "sqlite+pysqlite")
# A running server listens already: what proves its address is there at once, or never.
PROOF_SECONDS = 10.0
Print = Callable[[str], None]


class Unreadable(Exception):
    """A record that cannot be decrypted or parsed: reported and skipped."""


class Refused(Exception):
    """A record a start's check, or the proof of its address, refuses: reported and skipped."""


@dataclass
class Summary:
    imported: int = 0
    present: int = 0
    not_running: int = 0
    unreadable: int = 0
    refused: int = 0
    conflicts: int = 0
    unknown_hubs: set[str] = field(default_factory=set)

    def line(self, dry_run: bool) -> str:
        verb = "would import" if dry_run else "imported"
        text = (
            f"{verb} {self.imported}, already present {self.present}, not running {self.not_running}, "
            f"unreadable {self.unreadable}, refused {self.refused}, address already taken {self.conflicts}"
        )
        if self.unknown_hubs:
            text += f"; hubs without credentials here: {', '.join(sorted(self.unknown_hubs))}"
        return text


def database_url(settings: Settings, explicit: str | None) -> URL:
    """`--database`, else upstream's SQL_* variables, built as upstream builds them."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    sql_type = settings.sql_type or ("sqlite" if settings.sql_database_url else "")
    try:
        if explicit:
            url = make_url(explicit)
        elif sql_type in SQLITE_TYPES:  # upstream concatenates: the default is sqlite:////tmp/sqlite.db
            url = make_url(f"{sql_type}://{settings.sql_database_url or '//tmp/sqlite.db'}")
        elif sql_type == "postgresql":
            url = URL.create(
                "postgresql", settings.sql_user, settings.sql_password.get_secret_value() or None,
                settings.sql_host, settings.sql_port, settings.sql_database,
            )  # fmt: skip
        else:
            raise ConfigurationError("name upstream's database: --database URL, or SQL_TYPE with its SQL_* variables")
    except ArgumentError as exc:
        raise ConfigurationError(f"not a database URL: {exc}") from None
    if url.drivername == "postgresql":  # the `postgresql` extra installs psycopg 3, not SQLAlchemy's default
        url = url.set(drivername="postgresql+psycopg")
    return url


def read_services(url: URL) -> list[Mapping[str, Any]]:
    """Every row of upstream's `service` table (blocking; run it in a thread)."""
    from sqlalchemy import (
        Boolean,
        Column,
        DateTime,
        Integer,
        LargeBinary,
        MetaData,
        String,
        Table,
        create_engine,
        select,
    )
    from sqlalchemy import inspect as inspect_db
    from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

    types: dict[str, Any] = {
        "id": Integer, "name": String, "start_id": String, "jupyterhub_username": String,
        "start_date": DateTime(timezone=True), "end_date": DateTime(timezone=True),
        "last_update": DateTime(timezone=True), "state_stored": Boolean, "stop_pending": Boolean,
        "body": LargeBinary, "state": LargeBinary, "start_response": LargeBinary,
        "jupyterhub_user_id": Integer, "flavor": String,
    }  # fmt: skip
    shown = url.render_as_string(hide_password=True)
    try:
        engine = create_engine(url)
    except (NoSuchModuleError, ImportError) as exc:
        hint = " (pip install 'outpost-functions[postgresql]')" if url.drivername.startswith("postgresql") else ""
        raise ConfigurationError(f"no driver for {shown}{hint}: {exc}") from None
    try:
        columns = {column["name"] for column in inspect_db(engine).get_columns("service")}
        missing = sorted(set(REQUIRED) - columns)
        if missing:
            raise ConfigurationError(f"{shown}: table `service` lacks {', '.join(missing)}: not an upstream Outpost")
        names = [name for name in (*REQUIRED, *OPTIONAL) if name in columns]
        table = Table("service", MetaData(), *(Column(name, types[name]) for name in names))
        query = select(table).order_by(table.c.id if "id" in columns else table.c.name)
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]
    except SQLAlchemyError as exc:
        raise ConfigurationError(f"cannot read upstream's database {shown}: {type(exc).__name__}: {exc}") from None
    finally:
        engine.dispose()


def _object(crypt: Crypt, row: Mapping[str, Any], column: str) -> dict[str, Any]:
    """A Fernet token of a JSON object; a NULL column reads as {} (as upstream reads it)."""
    token = row[column]
    if token is None:
        return {}
    try:
        value = crypt.decrypt_json(bytes(token) if isinstance(token, memoryview) else token)
    except UndecryptableRecord:
        raise Unreadable(f"{column}: not decryptable with OUTPOST_CRYPT_KEY, or not JSON") from None
    if not isinstance(value, dict):
        raise Unreadable(f"{column}: not a JSON object")
    return value


def _utc(moment: Any, default: dt.datetime | None) -> dt.datetime | None:
    """sqlite gives upstream's tz-aware datetimes back naive (UTC wall time); the maximum means none."""
    if not isinstance(moment, dt.datetime) or moment.year >= 9999:
        return default
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _address(answer: str) -> str:
    """The "host:port" of a start answer ("host:port" or a URL): where the hub's forwards go."""
    if not answer:
        return ""
    return urlparse(answer if "://" in answer else f"//{answer}").netloc


def service_id(row: Mapping[str, Any]) -> ServiceId:
    return ServiceId(str(row["jupyterhub_username"]), str(row["name"] or ""), str(row["start_id"] or "0"))


@dataclass(frozen=True)
class Running:
    """A running service as its upstream row says, before any check."""

    sid: ServiceId
    row: Mapping[str, Any]
    request: StartRequest
    spawner_state: dict[str, Any]
    answer: str

    @property
    def address(self) -> str:
        return _address(self.answer)


def parse(row: Mapping[str, Any], crypt: Crypt) -> Running | str:
    """The running upstream service of a row, or why it is not running; raises `Unreadable`."""
    if row["stop_pending"]:
        return "its stop is under way"
    if not row["state_stored"]:
        return "its start has not finished"
    sid = service_id(row)
    body, spawner_state, response = (_object(crypt, row, column) for column in ("body", "state", "start_response"))
    if not isinstance(response.get("service"), str):
        return "it never answered its start"
    user_options = body.get("user_options") or {}
    if not isinstance(user_options, dict):
        raise Unreadable("body: user_options is not a JSON object")
    try:
        request = StartRequest.model_validate(
            {**body, "name": sid.name, "user_options": {**user_options, "start_id": sid.start_id}}
        )
    except ValidationError as exc:
        raise Unreadable(f"body: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    return Running(sid, row, request, spawner_state, response["service"])


def record(running: Running, request: StartRequest, backend: SpawnerBackend) -> ImportedRecord:
    """The RUNNING record of a service, with the request as the start's checks left it."""
    row, sid = running.row, running.sid
    now = dt.datetime.now(dt.UTC)
    started = _utc(row.get("start_date"), now) or now
    return ImportedRecord(
        sid=sid,
        user=request.user,
        user_id=str(row.get("jupyterhub_user_id") or request.env.get("JUPYTERHUB_USER_ID", "")),
        flavor=str(row.get("flavor") or request.flavor or ""),
        start_date=started,
        end_date=_utc(row.get("end_date"), None),
        last_update=_utc(row.get("last_update"), started) or started,
        address=running.address,
        body=request.without_certs(),
        state=backend.adopted_state(sid, request.env, request.misc, running.spawner_state),
        answer=running.answer,
    )


async def checked(
    runtime: Runtime, backend: SpawnerBackend, running: Running, named: Counter[str]
) -> tuple[ImportedRecord, list[str]]:
    """The record of a running service once it has passed what a start passes, and the notes a start would give
    about its callback URLs (which are then never called); raises `Refused`."""
    sid = running.sid
    try:
        request = await screened(runtime, sid.hub, running.request)
    except OutpostError as exc:
        raise Refused(exc.message) from None
    address = running.address
    host, port = urlparse(f"//{address}").hostname, _port(address)
    if not host or port is None:
        raise Refused(f"its start answer names no host and port: {running.answer!r}")
    if named[address] > 1:
        raise Refused(f"another row of upstream's database names its address {address} as well")
    own = await _own_listener(runtime, host, port)
    if own:
        raise Refused(own)
    imported = record(running, request, backend)
    try:
        await backend.prove_adopted(imported.state, f"http://{address}", PROOF_SECONDS)
    except OutpostError as exc:
        raise Refused(f"its address {address} is not proved to be its server's: {exc.message}") from None
    except Exception as exc:  # the spawner's own load_state or poll on a state it cannot use
        raise Refused(f"its address {address} is not proved to be its server's: {type(exc).__name__}") from None
    return imported, callback_notes(runtime, sid, request.env, announce=True)


def _port(address: str) -> int | None:
    try:
        return urlparse(f"//{address}").port
    except ValueError:  # out of range, or not a number
        return None


async def _own_listener(runtime: Runtime, host: str, port: int) -> str:
    """Why the address is one the outpost never connects to (its own API, SSH daemon or Redis on a local
    address, a metadata address), as for a callback URL; "" otherwise, and for a name that does not resolve
    here (a Service of another network: its proof is its name)."""
    import httpcore

    from outpost.guarded_http import AddressRefused, GuardedNetworkBackend

    try:
        await GuardedNetworkBackend(runtime.settings.own_ports()).checked(host, port, PROOF_SECONDS)
    except AddressRefused as exc:
        return f"its address is not a server's: {exc}"
    except (httpcore.ConnectError, httpcore.ConnectTimeout):
        return ""
    return ""


async def import_upstream(runtime: Runtime, url: URL, *, dry_run: bool, out: Print) -> Summary:
    if runtime.backend_name != "spawner":
        raise ConfigurationError(
            "import-upstream needs the spawner backend with upstream's spawner class: "
            "c.JupyterHubOutpost.spawner_class (or c.Outpost.spawner_class) in outpost_config.py"
        )
    from outpost.backends.spawner import SpawnerBackend  # JupyterHub: only once we know it is needed

    backend = runtime.backend
    assert isinstance(backend, SpawnerBackend)
    rows: Sequence[Mapping[str, Any]] = await asyncio.to_thread(read_services, url)
    out(f"{len(rows)} service record(s) in {url.render_as_string(hide_password=True)}" + (" (dry run)" * dry_run))
    summary = Summary()
    parsed: list[Running | str | Unreadable] = []
    for row in rows:
        try:
            parsed.append(parse(row, runtime.store.crypt))
        except Unreadable as exc:
            parsed.append(exc)
    # Upstream never ran two services at one address: of two rows naming one, one is forged, and neither wins.
    named = Counter(item.address for item in parsed if isinstance(item, Running))
    for number, (row, item) in enumerate(zip(rows, parsed, strict=True), 1):
        sid = service_id(row)
        label = f"[{number}/{len(rows)}] {sid}"
        if isinstance(item, Unreadable):
            summary.unreadable += 1
            out(f"{label}: unreadable, skipped ({item})")
            continue
        if isinstance(item, str):
            summary.not_running += 1
            out(f"{label}: not running, skipped ({item})")
            continue
        try:
            adopted, notes = await checked(runtime, backend, item, named)
        except Refused as exc:
            summary.refused += 1
            out(f"{label}: refused, skipped ({exc})")
            continue
        if sid.hub not in runtime.credentials:
            summary.unknown_hubs.add(sid.hub)
        if dry_run:
            verdict = "exists" if await runtime.store.meta(sid) is not None else "ok"
        else:
            verdict = await runtime.store.import_running(adopted)
        if verdict == "exists":
            summary.present += 1
            out(f"{label}: already present, left alone")
        elif verdict == "address_taken":
            summary.conflicts += 1
            out(f"{label}: skipped, its address {adopted.address} already belongs to another record")
        else:
            summary.imported += 1
            out(
                f"{label}: {'would import' if dry_run else 'imported'} (user {adopted.user}, address {adopted.address})"
            )
            for note in notes:
                out(f"  {note}")
    out(summary.line(dry_run))
    return summary

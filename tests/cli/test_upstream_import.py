"""`outpost import-upstream`: an upstream Outpost's database (its schema, built here: sqlite, and a throwaway
PostgreSQL cluster), imported by the real command, then the imported servers polled and stopped through the API
with the spawner backend. tests/security/test_upstream_import.py has the crafted rows."""

from __future__ import annotations

import getpass
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from traitlets.config import Config

from outpost.backends.spawner import SpawnerBackend
from outpost.cli.upstream_import import database_url
from outpost.errors import ConfigurationError
from outpost.settings import Settings, load_settings
from tests.backends.test_spawner import spec
from tests.conftest import TINY_SERVER, basic, settings_env
from tests.e2e.processes import VENV_BIN, free_port, listening, wait_until
from tests.support import postgresql
from tests.support.recorder import Recorder

pytestmark = pytest.mark.asyncio(loop_scope="session")
A, B = basic("hubA"), basic("hubB")
# Upstream's tables as SQLAlchemy creates them on sqlite (project/app/database/models.py, 2.x).
SCHEMA = """
CREATE TABLE jupyterhub (name VARCHAR NOT NULL, PRIMARY KEY (name));
CREATE TABLE service (
    id INTEGER NOT NULL, name VARCHAR, start_id VARCHAR, jupyterhub_username VARCHAR NOT NULL,
    last_update DATETIME, start_date DATETIME, end_date DATETIME,
    state_stored BOOLEAN, start_pending BOOLEAN, stop_pending BOOLEAN,
    body BLOB, state BLOB, start_response BLOB, jupyterhub_user_id INTEGER, flavor VARCHAR,
    PRIMARY KEY (id), FOREIGN KEY(jupyterhub_username) REFERENCES jupyterhub (name)
);
"""
# The same table as SQLAlchemy creates it on PostgreSQL.
POSTGRESQL_SCHEMA = """
CREATE TABLE jupyterhub (name VARCHAR NOT NULL, PRIMARY KEY (name));
CREATE TABLE service (
    id SERIAL NOT NULL, name VARCHAR, start_id VARCHAR, jupyterhub_username VARCHAR NOT NULL,
    last_update TIMESTAMP WITH TIME ZONE, start_date TIMESTAMP WITH TIME ZONE, end_date TIMESTAMP WITH TIME ZONE,
    state_stored BOOLEAN, start_pending BOOLEAN, stop_pending BOOLEAN,
    body BYTEA, state BYTEA, start_response BYTEA, jupyterhub_user_id INTEGER, flavor VARCHAR,
    PRIMARY KEY (id), FOREIGN KEY(jupyterhub_username) REFERENCES jupyterhub (name)
);
"""
NO_END = "9999-12-31 23:59:59.999999"  # upstream's end_date default, as sqlite keeps it
CONFIG = f"""
c.JupyterHubOutpost.spawner_class = "localprocess"
c.LocalProcessSpawner.cmd = [{sys.executable!r}, {str(TINY_SERVER)!r}]
c.LocalProcessSpawner.interrupt_timeout = 2
c.LocalProcessSpawner.term_timeout = 2
"""


def token(fernet: Fernet, value: Any) -> bytes:
    return fernet.encrypt(json.dumps(value).encode())


def upstream_row(fernet: Fernet, hub: str, name: str, start_id: str, env: dict[str, str], spawner_state: dict[str, Any],
                 service: str, **columns: Any) -> dict[str, Any]:  # fmt: skip
    """A `service` row as upstream writes it once a start has finished."""
    body = {"env": env, "misc": {"port": 0, "ip": "127.0.0.1"}, "user_options": {}}
    return {
        "name": name, "start_id": start_id, "jupyterhub_username": hub, "last_update": "2026-11-30 10:00:05.000000",
        "start_date": "2026-11-30 10:00:00.000000", "end_date": NO_END, "state_stored": 1, "start_pending": 0,
        "stop_pending": 0, "body": token(fernet, body), "state": token(fernet, spawner_state),
        "start_response": token(fernet, {"service": service}), "jupyterhub_user_id": 7, "flavor": None, **columns,
    }  # fmt: skip


def write_database(path: Path, rows: list[dict[str, Any]]) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.executemany(
            "INSERT INTO jupyterhub (name) VALUES (?)", [(h,) for h in {r["jupyterhub_username"] for r in rows}]
        )
        for row in rows:
            db.execute(
                f"INSERT INTO service ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
            )


def run_import(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "PATH": f"{VENV_BIN}:/usr/bin:/bin"}
    return subprocess.run([str(VENV_BIN / "outpost"), "import-upstream", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


async def snapshot(redis: aioredis.Redis) -> dict[bytes, bytes | None]:
    return {key: await redis.dump(key) for key in sorted(await redis.keys("*"))}


@pytest.fixture
def upstream_settings(make_settings: Callable[..., Settings], backend_config: Path) -> Settings:
    backend_config.write_text(CONFIG)
    return make_settings()


async def test_import_then_poll_and_stop(
    api: httpx.AsyncClient, upstream_settings: Settings, redis: aioredis.Redis, tmp_path: Path
) -> None:
    fernet = Fernet(upstream_settings.crypt_key.get_secret_value())
    # The upstream Outpost's LocalProcessSpawner started a real server, and one that has exited since.
    config = Config()
    config.LocalProcessSpawner.cmd = [sys.executable, str(TINY_SERVER)]
    upstream = SpawnerBackend(config, "localprocess", tmp_path / "upstream")
    user = getpass.getuser()  # LocalProcessSpawner runs servers as that system user
    running = spec(user, misc={"port": 0, "ip": "127.0.0.1"})
    started = await upstream.start(running, Recorder().save, Recorder().report)
    pid = started.state["spawner"]["pid"]
    try:
        await _import_poll_and_stop(api, upstream_settings, redis, tmp_path, fernet, running.env, pid, started.address)
    finally:
        if psutil.pid_exists(pid):  # the test failed before the API stopped it
            psutil.Process(pid).kill()


async def _import_poll_and_stop(
    api: httpx.AsyncClient, upstream_settings: Settings, redis: aioredis.Redis, tmp_path: Path, fernet: Fernet,
    env: dict[str, str], pid: int, server: str,
) -> None:  # fmt: skip
    exited = subprocess.Popen(["true"])
    exited.wait()
    address = server.removeprefix("http://")
    rows = [
        upstream_row(fernet, "hubA", "srv", "1", env, {"pid": pid}, address, flavor="small",
                     end_date="2030-01-01 00:00:00.000000"),
        # A server that has exited since: no process proves its address.
        upstream_row(fernet, "hubB", "gone", "5", {**env, "JUPYTERHUB_USER": "bob"}, {"pid": exited.pid},
                     "127.0.0.1:1"),
        upstream_row(fernet, "hubA", "bad-token", "1", env, {}, "x:1", body=b"not a fernet token"),
        upstream_row(fernet, "hubA", "bad-json", "1", env, {}, "x:2", state=fernet.encrypt(b"{oops")),
        upstream_row(fernet, "hubA", "starting", "1", env, {}, "x:3", state_stored=0),
        upstream_row(fernet, "hubA", "stopping", "1", env, {}, "x:4", stop_pending=1),
    ]  # fmt: skip
    database = tmp_path / "upstream.db"
    write_database(database, rows)
    url = f"sqlite:///{database}"

    dry = run_import(upstream_settings, "--database", url, "--dry-run")
    assert "[1/6] hubA/srv/1: would import" in dry.stdout, dry.stdout + dry.stderr
    assert await redis.keys("outpost:hub:*") == []  # a dry run writes nothing

    first = run_import(upstream_settings, "--database", url)
    out = first.stdout
    assert first.returncode == 1, out + first.stderr  # unreadable and refused records are worth a non-zero exit
    assert "[1/6] hubA/srv/1: imported" in out
    assert "[2/6] hubB/gone/5: refused, skipped (its address 127.0.0.1:1 is not proved" in out
    assert "[3/6] hubA/bad-token/1: unreadable, skipped (body:" in out
    assert "[4/6] hubA/bad-json/1: unreadable, skipped (state:" in out
    assert "[5/6] hubA/starting/1: not running, skipped" in out and "[6/6] hubA/stopping/1: not running" in out
    assert "imported 1, already present 0, not running 2, unreadable 2, refused 1, address already taken 0" in out
    assert "not a fernet token" not in out and "secret-api-token" not in out

    before = await snapshot(redis)
    second = run_import(upstream_settings, "--database", url)
    assert "imported 0, already present 1, not running 2, unreadable 2, refused 1" in second.stdout
    assert await snapshot(redis) == before  # idempotent: nothing changed

    # The hub polls and stops its server as before the switch.
    [listed] = (await api.get("/services", headers=A)).json()
    assert (listed["name"], listed["start_id"], listed["jupyterhub_userid"]) == ("srv", "1", "7")
    assert (await api.get("/services/srv/1", headers=A)).json() == {"status": None}
    assert (await api.get("/services/srv/1", headers=B)).status_code == 404  # still hubA's only
    assert (await api.get("/services/gone/5", headers=B)).status_code == 404
    assert int(await redis.get("outpost:slots:flavor:small") or 0) == 1  # the imported server holds its slot
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert int(await redis.get("outpost:slots:flavor:small") or 0) == 0
    assert (await api.get("/services", headers=A)).json() == []


@pytest.fixture(scope="module")
def postgresql_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster of this module's own."""
    bin_dir = postgresql.binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server (initdb, pg_ctl): sh tools/install_postgresql.sh")
    with postgresql.cluster(bin_dir) as url:
        yield url


def write_postgresql(url: str, rows: list[dict[str, Any]]) -> None:
    import psycopg

    with psycopg.connect(url) as db:
        db.execute(POSTGRESQL_SCHEMA)
        for hub in {row["jupyterhub_username"] for row in rows}:
            db.execute("INSERT INTO jupyterhub (name) VALUES (%s)", [hub])
        for row in rows:
            names = ", ".join(row)
            db.execute(f"INSERT INTO service ({names}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))


@pytest.fixture
def tiny_server() -> Iterator[tuple[int, int]]:
    """A running server, as upstream's LocalProcessSpawner left it: its pid and port."""
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/"}
    proc = subprocess.Popen([sys.executable, str(TINY_SERVER)], env=env)
    wait_until(f"a server on {port}", lambda: listening(port), 15)
    yield proc.pid, port
    proc.kill()
    proc.wait()


async def test_import_from_postgresql_passes_the_start_s_checks(
    api: httpx.AsyncClient, upstream_settings: Settings, redis: aioredis.Redis, postgresql_url: str,
    tiny_server: tuple[int, int],
) -> None:  # fmt: skip
    fernet = Fernet(upstream_settings.crypt_key.get_secret_value())
    pid, port = tiny_server
    env = {"JUPYTERHUB_USER": "alice", "JUPYTERHUB_API_TOKEN": "secret-api-token", "JUPYTERHUB_USER_ID": "7"}
    rows = [
        upstream_row(fernet, "hubA", "srv", "1", env, {"pid": pid}, f"127.0.0.1:{port}"),
        upstream_row(fernet, "hubA", "preload", "1", {**env, "LD_PRELOAD": "/tmp/evil.so"}, {"pid": pid},
                     "127.0.0.1:9"),
    ]  # fmt: skip
    for row in rows:  # PostgreSQL's types: booleans, and the time zone upstream writes
        row.update(state_stored=True, start_pending=False, stop_pending=False)
        for column in ("last_update", "start_date", "end_date"):
            row[column] += "+00"
    write_postgresql(postgresql_url, rows)

    result = run_import(upstream_settings, "--database", postgresql_url)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert f"2 service record(s) in postgresql+psycopg://outpost@127.0.0.1:{postgresql_url.split(':')[-1]}" in out
    assert f"[1/2] hubA/srv/1: imported (user alice, address 127.0.0.1:{port})" in out
    assert "[2/2] hubA/preload/1: refused, skipped (This outpost does not pass these environment variables" in out
    assert "imported 1, already present 0, not running 0, unreadable 0, refused 1, address already taken 0" in out
    assert await redis.hgetall("outpost:addresses") == {f"127.0.0.1:{port}".encode(): b"outpost:hub:hubA:svc:srv:1"}
    assert (await api.get("/services/srv/1", headers=A)).json() == {"status": None}
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_import_needs_the_spawner_backend_and_a_database(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    local = run_import(make_settings(), "--database", f"sqlite:///{tmp_path / 'x.db'}")
    assert local.returncode == 2 and "import-upstream needs the spawner backend" in local.stderr
    missing = run_import(make_settings(backend="spawner"), "--dry-run")
    assert missing.returncode == 2 and "name upstream's database" in missing.stderr


async def test_a_database_that_is_not_upstreams_is_refused(upstream_settings: Settings, tmp_path: Path) -> None:
    database = tmp_path / "other.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE service (id INTEGER PRIMARY KEY, name VARCHAR)")
    refused = run_import(upstream_settings, "--database", f"sqlite:///{database}")
    assert refused.returncode == 2 and "table `service` lacks" in refused.stderr, refused.stderr
    nothing = run_import(upstream_settings, "--database", f"sqlite:///{tmp_path / 'none.db'}")
    assert nothing.returncode == 2 and "lacks" in nothing.stderr or "cannot read" in nothing.stderr


async def test_upstream_database_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_CRYPT_KEY", Fernet.generate_key().decode())
    assert str(database_url(load_settings(SQL_TYPE="sqlite"), None)) == "sqlite:////tmp/sqlite.db"
    monkeypatch.setenv("SQL_DATABASE_URL", "//data/outpost.db")
    assert str(database_url(load_settings(), None)) == "sqlite:////data/outpost.db"
    for name, value in {"SQL_TYPE": "postgresql", "SQL_USER": "out post", "SQL_PASSWORD": "p@ss:/word",
                        "SQL_HOST": "db", "SQL_PORT": "5433", "SQL_DATABASE": "outpost"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    url = database_url(load_settings(), None)
    assert (url.drivername, url.username, url.password, url.host, url.port) == (
        "postgresql+psycopg", "out post", "p@ss:/word", "db", 5433,
    )  # fmt: skip
    assert "p@ss" not in url.render_as_string(hide_password=True)
    assert database_url(load_settings(), "postgresql://u@h/d").drivername == "postgresql+psycopg"
    with pytest.raises(ConfigurationError, match="not a database URL"):
        database_url(load_settings(), "not a url")

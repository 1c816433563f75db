"""`outpost dev`: the whole stack on one machine, with one command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import uvicorn
from cryptography.fernet import Fernet
from pydantic import SecretStr
from redis.exceptions import RedisError
from traitlets.config import Config

import sshd
from outpost import logs
from outpost.cli import devkeys as keys
from outpost.cli import devlock, envfile
from outpost.cli.devserver import build_router
from outpost.cli.embedded_redis import EmbeddedRedis
from outpost.cli.httplimits import limited_protocol
from outpost.cli.shutdown import Signals, say
from outpost.errors import ConfigurationError
from outpost.files import write_private
from outpost.lifecycle.stop import stop_if_known
from outpost.lifecycle.timer import run_timer
from outpost.runtime import Runtime, close_runtime, get_runtime, use_settings
from outpost.settings import Settings, load_settings

log = logging.getLogger(__name__)
GRACE_SECONDS = 5  # for open HTTP requests and SSH connections at shutdown


@dataclass(frozen=True)
class DevOptions:
    api_host: str
    api_port: int
    ssh_port: int
    data_dir: Path
    config_file: Path | None
    backend: str
    keep_servers: bool = False
    rotate_key: bool = False


def _persisted_secret(path: Path, make: str) -> str:
    """A secret generated on the first run and kept in the data directory (mode 0600, made so again
    if an earlier run left it readable by others)."""
    if path.exists():
        path.chmod(0o600)
        return path.read_text().strip()
    write_private(path, make)
    return make


def dev_settings(options: DevOptions, redis_url: str) -> Settings:
    data = options.data_dir
    overrides: dict[str, object] = {
        "redis_url": redis_url,
        "data_dir": data,
        "backend": options.backend,
        "api_port": options.api_port,
        "ssh_port": options.ssh_port,
        "ssh_listen_host": options.api_host,
        "ssh_host_key": data / "ssh_host_key",
    }
    if not os.environ.get("OUTPOST_CRYPT_KEY"):
        overrides["crypt_key"] = _persisted_secret(data / "crypt_key", Fernet.generate_key().decode())
    if not (os.environ.get("OUTPOST_HUB_USERNAMES") or os.environ.get("usernames")):  # upstream's name too
        overrides["hub_usernames"] = "jupyterhub"
        overrides["hub_passwords"] = _persisted_secret(data / "hub_password", secrets.token_urlsafe(24))
    settings = load_settings(options.config_file, **overrides)
    if settings.metrics_token is None:  # neither the environment nor the values set one: /metrics gets its own
        token = _persisted_secret(data / "metrics_token", secrets.token_urlsafe(32))
        settings = settings.model_copy(update={"metrics_token": SecretStr(token)})
    return settings


def spawner_snippet(settings: Settings, options: DevOptions) -> str:
    """The `jupyterhub_config.py` lines that point an OutpostSpawner at this outpost."""
    hub, password = next(iter(settings.hub_credentials().items()))
    token = base64.b64encode(f"{hub}:{password}".encode()).decode()
    host = "127.0.0.1" if options.api_host in ("0.0.0.0", "::") else options.api_host
    return f"""\
# --- jupyterhub_config.py: use this outpost (hub credential {hub!r}) ---
import outpostspawner  # registers the hub APIs the outpost calls back (events, setup-tunnel, flavors)
c.JupyterHub.spawner_class = "outpostspawner.OutpostSpawner"
c.OutpostSpawner.request_url = "http://{host}:{options.api_port}{settings.base_path}/services"
c.OutpostSpawner.request_headers = {{"Authorization": "Basic {token}"}}
c.OutpostSpawner.svc_create = False          # no Kubernetes Service for local servers
c.OutpostSpawner.ssh_during_startup = False  # the hub connects to the returned address directly
# To tunnel through the outpost's SSH daemon instead (put the hub's public key in sshPublicKeys):
# c.OutpostSpawner.ssh_during_startup = True
# c.OutpostSpawner.svc_create = True
# c.OutpostSpawner.ssh_custom_svc = lambda spawner, info: ("127.0.0.1", spawner.port)
# c.OutpostSpawner.ssh_custom_svc_remove = lambda spawner, info: None
# c.OutpostSpawner.custom_misc_disable_default = True  # hub and servers share this machine
# c.OutpostSpawner.ssh_node = "{host}"
# c.OutpostSpawner.ssh_port = {options.ssh_port}
# c.OutpostSpawner.ssh_username = "{settings.ssh_username}"
# c.OutpostSpawner.ssh_key = "/path/to/the/hub/private/key"
# Starts at the same moment must share one SSH connection: each would find no ControlMaster and open
# its own, and the losers fail (419 "Could not create ssh connection") or linger. One forward at a time:
# import asyncio
# _one_forward = asyncio.Lock()
# async def _forward_one_at_a_time(spawner, port_forward_info):
#     async with _one_forward:
#         await spawner.ssh_default_forward()
# c.OutpostSpawner.ssh_custom_forward = _forward_one_at_a_time
# A hub running as root runs ssh as uid 1000: key, known_hosts and control socket must be uid 1000's.
# c.OutpostSpawner.ssh_forward_options = {{"ControlPath": "/uid-1000-dir/cm-%C",
#                                          "UserKnownHostsFile": "/uid-1000-dir/known_hosts"}}
# ------------------------------------------------------------------------"""


def redis_url_for(options: DevOptions) -> tuple[str, EmbeddedRedis | None]:
    """An external Redis (`OUTPOST_REDIS_URL` or `REDIS_URL`), else the embedded one in the data directory."""
    url = os.environ.get("OUTPOST_REDIS_URL") or os.environ.get("REDIS_URL")
    if url or os.environ.get("OUTPOST_REDIS_SENTINELS"):  # the sentinels win over a URL (redis_client.py)
        return url or "", None
    embedded = EmbeddedRedis(options.data_dir / "redis")
    return embedded.url, embedded


@contextlib.asynccontextmanager
async def running_redis(embedded: EmbeddedRedis | None) -> AsyncIterator[None]:
    if embedded is None:
        yield
        return
    await asyncio.to_thread(embedded.start)
    try:
        yield
    finally:
        await asyncio.to_thread(embedded.stop)


def listening_socket(host: str, port: int, flag: str) -> socket.socket:
    """Bind the port now, before anything starts or is printed; a busy port is one line with the fix.

    With TCP_NODELAY, which the connections it accepts inherit: asyncio sets it only on sockets made
    with IPPROTO_TCP (`create_server` makes them with 0), and uvicorn writes a response's headers and
    body apart, so on a kept-alive connection the body would wait 40 ms for the client's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses it or pass {flag} with a free port"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def stop_all_servers() -> int:
    """Stop every server this outpost knows, all at once (each stop is bounded by its backend)."""
    runtime = await get_runtime()
    known = [meta.id async for meta in runtime.store.all_hubs_services()]
    outcomes = await asyncio.gather(*(stop_if_known(runtime, sid) for sid in known), return_exceptions=True)
    for sid, outcome in zip(known, outcomes, strict=True):
        if isinstance(outcome, Exception):  # e.g. a record no key decrypts: the others still stop
            log.error("could not stop %s: %s", sid, type(outcome).__name__)
    return sum(not isinstance(outcome, Exception) for outcome in outcomes)


class _ApiServer(uvicorn.Server):
    """The API without uvicorn's signal handling: `outpost dev` owns the signals and stops the API first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _reach(url: str) -> None:
    try:
        await asyncio.wait_for((await get_runtime()).store.ping(), timeout=10)
    except (RedisError, OSError, TimeoutError) as exc:
        raise ConfigurationError(
            f"cannot reach Redis at {_redacted(url)} ({type(exc).__name__}); check OUTPOST_REDIS_URL, "
            "or unset it to use the embedded Redis"
        ) from None


async def serve_ssh(settings: Settings, runtime: Runtime) -> sshd.Listener:
    try:
        return await sshd.serve(settings, runtime.store)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {settings.ssh_listen_host}:{settings.ssh_port} for SSH ({exc.strerror}); "
            "stop what uses it or pass --ssh-port with a free port"
        ) from None


async def run_dev(options: DevOptions) -> int:
    """Serve until SIGINT, SIGTERM or SIGHUP; return the exit code (0, or 128 + n when forced)."""
    with devlock.claim(options.data_dir):
        redis_url, embedded = redis_url_for(options)
        key_file = options.data_dir / "crypt_key"
        rotating = options.rotate_key and keys.begin_rotation(key_file)
        if options.rotate_key and not rotating:
            say(f"--rotate-key: no key in {options.data_dir} yet; this first start makes one")
        settings = dev_settings(options, redis_url)  # a bad configuration stops here, before anything runs
        logs.configure(json_format=settings.log_format == "json")
        api_socket = listening_socket(options.api_host, options.api_port, "--api-port")
        if options.ssh_port:
            listening_socket(options.api_host, options.ssh_port, "--ssh-port").close()
        signals = Signals()
        async with running_redis(embedded):
            use_settings(settings)
            await _reach(redis_url)
            if rotating:  # before the API serves, so no request ever sees a record it cannot read
                await keys.finish_rotation(key_file, print)
                await close_runtime()
                settings = dev_settings(options, redis_url)
                use_settings(settings)
            runtime = await get_runtime()
            if settings.backend == "local" and os.geteuid() == 0:
                print(choose_server_user(runtime.config), flush=True)
            asyncssh.set_log_level(logging.WARNING)  # as `python -m sshd`: one line per forward is ours
            server = _ApiServer(
                # proxy_headers=False: uvicorn would take the caller from X-Forwarded-For of any loopback
                # peer; who calls is decided by OUTPOST_TRUSTED_PROXIES alone (outpost.proxies).
                # http: uvicorn's h11 protocol with the header and body deadlines and the per-source cap.
                uvicorn.Config(build_router(base_path=settings.base_path), lifespan="off", log_level="warning",
                               log_config=None, timeout_graceful_shutdown=GRACE_SECONDS, proxy_headers=False,
                               http=limited_protocol(settings))
            )  # fmt: skip
            listener = await serve_ssh(settings, runtime)
            env_file = options.data_dir / "env"
            envfile.write(env_file, envfile.admin_environment(settings), options.config_file)
            # Printed before the API serves: a client that sees /ping answer has the whole announcement
            # (the bound socket queues any connection made meanwhile).
            announce(settings, options, listener.port, env_file)
            api = asyncio.create_task(server.serve(sockets=[api_socket]))
            background = [
                asyncio.create_task(run_timer(runtime, settings.timer_interval_seconds)),
                asyncio.create_task(sshd.recreate_configured(runtime)),
            ]
            requested = asyncio.create_task(signals.requested.wait())
            await asyncio.wait([api, requested], return_when="FIRST_COMPLETED")
            requested.cancel()
            if not signals.requested.is_set():
                log.error("the API stopped on its own; stopping everything")
            stopping = asyncio.create_task(
                shut_down(server, api, listener, background, keep_servers=options.keep_servers, why=signals.first)
            )
            forced = asyncio.create_task(signals.forced.wait())
            await asyncio.wait([stopping, forced], return_when="FIRST_COMPLETED")
            forced.cancel()
            if not stopping.done():
                stopping.cancel()
                say("forced: servers not stopped yet keep running; the next `outpost dev` here adopts them")
            failure = (await asyncio.gather(stopping, return_exceptions=True))[0]
            if isinstance(failure, Exception):
                say(f"shutdown incomplete ({type(failure).__name__}); the next `outpost dev` here adopts what runs")
            await close_runtime()
        signals.remove()
        say("bye")
        return signals.exit_code() if signals.requested.is_set() else 1


async def shut_down(
    server: uvicorn.Server, api: asyncio.Task[None], listener: sshd.Listener, background: list[asyncio.Task[Any]],
    *, keep_servers: bool, why: str,
) -> None:  # fmt: skip
    """In order: the API (no new requests), the SSH daemon and its connections, the servers."""
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    server.should_exit = True
    await asyncio.gather(api, return_exceptions=True)  # a crashed API must not keep the servers running
    say(f"{why}: API stopped")
    listener.close()
    try:
        await asyncio.wait_for(listener.wait_closed(), GRACE_SECONDS)
    except TimeoutError:
        log.warning("SSH connections did not close within %.0f s", GRACE_SECONDS)
    say(f"{why}: SSH daemon stopped")
    if keep_servers:
        kept = [meta async for meta in (await get_runtime()).store.all_hubs_services()]
        say(f"kept {len(kept)} server(s) running (--keep-servers); the next `outpost dev` here adopts them")
    else:
        say(f"stopped {await stop_all_servers()} server(s)")


def announce(settings: Settings, options: DevOptions, ssh_port: int, env_file: Path) -> None:
    """What `outpost dev` prints once everything listens: addresses, the admin hint, the hub's snippet."""
    print(f"Outpost API on http://{options.api_host}:{options.api_port}  (Redis: {_redacted(_url(settings))})")
    print(f"SSH daemon on {options.api_host}:{ssh_port} (user {settings.ssh_username})")
    # The console script beside this Python: a fresh install puts no `outpost` on PATH (.venv/bin/outpost).
    command = _shown(Path(sys.executable).parent / "outpost")
    print(f"Administration: {command} --env-file {_shown(env_file)} check   (also: services list, rotate-key)")
    print(spawner_snippet(settings, options), flush=True)


def _url(settings: Settings) -> str:
    return settings.redis_url.get_secret_value() if settings.redis_url else ""


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, as a user would type it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def choose_server_user(config: Config) -> str:
    """As root, pick who local servers run as, unless the administrator's `run_as` or `uid_range` says: a uid
    of each hub's own from DEV_UID_RANGE when such a uid can run the configured command; otherwise root, with
    `--allow-root`, so a first server starts on any machine. Sets it in `config`; answers the line that tells
    the administrator."""
    from outpost.backends.local import LocalProcessBackend, resolved_command
    from outpost.backends.privileges import DEV_UID_RANGE, ServerUser, parse_uid_range, system_ids, unusable_path

    options = LocalProcessBackend(config=config)
    if options.run_as:
        return f"outpost dev runs as root: servers run as {options.run_as!r} (c.LocalProcessBackend.run_as)"
    if options.uid_range:
        return (
            f"outpost dev runs as root: each hub's servers run as a uid of its own from {options.uid_range} "
            "(c.LocalProcessBackend.uid_range)"
        )
    search_path = options.env.get("PATH", os.environ.get("PATH", ""))
    command = resolved_command([*options.cmd, *options.args], search_path)
    bounds = parse_uid_range(DEV_UID_RANGE)
    probe = next(uid for uid in bounds if uid not in system_ids(bounds))  # any unused uid can do what all can
    blocked = unusable_path(ServerUser(f"uid {probe}", probe, probe), command, search_path)
    if not blocked:
        config.LocalProcessBackend.uid_range = DEV_UID_RANGE
        return (
            f"outpost dev runs as root: each hub's servers run as an unprivileged uid of its own from {DEV_UID_RANGE} "
            "(set c.LocalProcessBackend.uid_range or run_as to choose)"
        )
    config.LocalProcessBackend.run_as = "root"
    config.LocalProcessBackend.args = [*options.args, "--allow-root"]
    real = os.path.realpath(blocked)
    if real != blocked and os.path.exists(real):
        blocked = f"{blocked} (that is, {real})"
    return (
        f"WARNING: outpost dev runs as root, and an unprivileged uid cannot use {blocked} to run {command[0]!r}: "
        "servers run AS ROOT (with --allow-root). To run them unprivileged, install the command where every user "
        "can run it (outside root's home) or set c.LocalProcessBackend.run_as to a user who can, or run outpost "
        "dev as an ordinary user."
    )


def _redis_shown(settings: Settings) -> str:
    if settings.redis_sentinels:
        return f"primary {settings.redis_sentinel_master!r} of the sentinels {settings.redis_sentinels}"
    return _redacted(settings.redis_url.get_secret_value() if settings.redis_url else "")


def _redacted(url: str) -> str:
    return url.split("@", 1)[-1] if "@" in url else url

"""`outpost dev`: the whole stack on one machine, with one command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet
from traitlets.config import Config

from outpost.embedded_redis import EmbeddedRedis
from outpost.errors import ConfigurationError
from outpost.files import private_dir, write_private
from outpost.runtime import close_runtime, get_runtime, use_settings
from outpost.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevOptions:
    api_host: str
    api_port: int
    ssh_port: int
    data_dir: Path
    config_file: Path | None
    backend: str


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
    return load_settings(options.config_file, **overrides)


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
# ------------------------------------------------------------------------"""


@contextlib.asynccontextmanager
async def redis_for(options: DevOptions) -> AsyncIterator[str]:
    url = os.environ.get("OUTPOST_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    embedded = EmbeddedRedis(options.data_dir / "redis")
    await asyncio.to_thread(embedded.start)
    try:
        yield embedded.url
    finally:
        await asyncio.to_thread(embedded.stop)


async def stop_all_servers() -> int:
    """Stop every server this outpost knows, so Ctrl-C leaves nothing running."""
    from outpost.operations import stop_if_known

    runtime = await get_runtime()
    stopped = 0
    async for meta in runtime.store.all_hubs_services():
        await stop_if_known(runtime, meta.id)
        stopped += 1
    return stopped


async def run_dev(options: DevOptions) -> None:
    import uvicorn

    import sshd
    from outpost.devserver import build_router
    from outpost.timer import run_timer

    private_dir(options.data_dir)
    async with redis_for(options) as redis_url:
        settings = dev_settings(options, redis_url)
        use_settings(settings)
        await (await get_runtime()).store.redis.ping()
        if settings.backend == "local" and os.geteuid() == 0:
            print(choose_server_user((await get_runtime()).config), flush=True)
        server = uvicorn.Server(
            uvicorn.Config(
                build_router(base_path=settings.base_path),
                host=options.api_host,
                port=options.api_port,
                lifespan="off",
                log_level="warning",
                # uvicorn would take the caller from X-Forwarded-For of any loopback peer; who calls
                # is decided by OUTPOST_TRUSTED_PROXIES alone (outpost.proxies).
                proxy_headers=False,
            )
        )
        print(f"Outpost API on http://{options.api_host}:{options.api_port}  (Redis: {_redacted(redis_url)})")
        runtime = await get_runtime()
        listener = await sshd.serve(settings, runtime.store)
        print(f"SSH daemon on {options.api_host}:{listener.port} (user {settings.ssh_username})")
        print(spawner_snippet(settings, options), flush=True)
        background = [
            asyncio.create_task(run_timer(runtime, settings.timer_interval_seconds)),
            asyncio.create_task(sshd.recreate_configured(runtime)),
        ]
        try:
            await server.serve()
        finally:
            for task in background:
                task.cancel()
            listener.close()
            await listener.wait_closed()
            stopped = await stop_all_servers()
            print(f"stopped {stopped} server(s); bye", flush=True)
            await close_runtime()


def choose_server_user(config: Config) -> str:
    """As root, pick who local servers run as, unless the administrator's `run_as` says: `nobody` when
    that user can run the configured command; otherwise root, with `--allow-root`, so a first server
    starts on any machine. Sets it in `config`; answers the line that tells the administrator."""
    from outpost.backends.local import LocalProcessBackend
    from outpost.backends.privileges import lookup_user, unusable_path

    options = LocalProcessBackend(config=config)
    if options.run_as:
        return f"outpost dev runs as root: servers run as {options.run_as!r} (c.LocalProcessBackend.run_as)"
    command = [*options.cmd, *options.args]
    try:
        blocked = unusable_path(lookup_user("nobody"), command, options.env.get("PATH", os.environ.get("PATH", "")))
    except ConfigurationError:
        blocked = "(there is no user 'nobody')"
    if not blocked:
        config.LocalProcessBackend.run_as = "nobody"
        return (
            "outpost dev runs as root: servers run as the unprivileged user 'nobody' "
            "(set c.LocalProcessBackend.run_as to choose another)"
        )
    config.LocalProcessBackend.run_as = "root"
    config.LocalProcessBackend.args = [*options.args, "--allow-root"]
    real = os.path.realpath(blocked)
    if real != blocked and os.path.exists(real):
        blocked = f"{blocked} (that is, {real})"
    return (
        f"WARNING: outpost dev runs as root, and the user 'nobody' cannot use {blocked} to run {command[0]!r}: "
        "servers run AS ROOT (with --allow-root). To run them unprivileged, set c.LocalProcessBackend.run_as "
        "to a user who can run the command (installed outside root's home), or run outpost dev as an "
        "ordinary user."
    )


def _redacted(url: str) -> str:
    return url.split("@", 1)[-1] if "@" in url else url

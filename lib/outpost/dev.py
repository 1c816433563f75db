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

from outpost.embedded_redis import EmbeddedRedis
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
    """A secret generated on the first run and kept in the data directory (mode 0600)."""
    if path.exists():
        return path.read_text().strip()
    path.write_text(make)
    path.chmod(0o600)
    return make


def dev_settings(options: DevOptions, redis_url: str) -> Settings:
    data = options.data_dir
    overrides: dict[str, object] = {
        "redis_url": redis_url,
        "data_dir": data,
        "backend": options.backend,
        "ssh_port": options.ssh_port,
        "ssh_listen_host": options.api_host,
        "ssh_host_key": data / "ssh_host_key",
    }
    if not os.environ.get("OUTPOST_CRYPT_KEY"):
        overrides["crypt_key"] = _persisted_secret(data / "crypt_key", Fernet.generate_key().decode())
    if not os.environ.get("OUTPOST_HUB_USERNAMES"):
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
c.OutpostSpawner.request_url = "http://{host}:{options.api_port}/services"
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
    if url or os.environ.get("OUTPOST_REDIS_SENTINELS"):  # the sentinels win over a URL (redis_client.py)
        yield url or ""
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

    options.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with redis_for(options) as redis_url:
        settings = dev_settings(options, redis_url)
        use_settings(settings)
        await (await get_runtime()).store.redis.ping()
        server = uvicorn.Server(
            uvicorn.Config(
                build_router(),
                host=options.api_host,
                port=options.api_port,
                lifespan="off",
                log_level="warning",
            )
        )
        print(f"Outpost API on http://{options.api_host}:{options.api_port}  (Redis: {_redis_shown(settings)})")
        runtime = await get_runtime()
        listener = await sshd.serve(settings, runtime.store)
        print(f"SSH daemon on {options.api_host}:{listener.port} (user {settings.ssh_username})")
        print(spawner_snippet(settings, options), flush=True)
        background = [
            asyncio.create_task(run_timer(runtime, settings.timer_interval_seconds)),
            asyncio.create_task(sshd.recreate_tunnels(runtime.store, runtime.hub, settings.recreates_tunnels)),
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


def _redis_shown(settings: Settings) -> str:
    if settings.redis_sentinels:
        return f"primary {settings.redis_sentinel_master!r} of the sentinels {settings.redis_sentinels}"
    return _redacted(settings.redis_url.get_secret_value() if settings.redis_url else "")


def _redacted(url: str) -> str:
    return url.split("@", 1)[-1] if "@" in url else url

"""Clients built lazily from Settings, one set per running event loop, closed with `aclose()`. How background
work is handed on is chosen by the entry point (`use_background`), not here: it runs the lifecycle, above us."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from traitlets.config import Config

from outpost import logs
from outpost.auth import HubLogins
from outpost.backends.base import Backend, load_backend_config
from outpost.callbacks import CallbackPolicy
from outpost.credits import CreditPolicy
from outpost.crypto import Crypt
from outpost.errors import ConfigurationError
from outpost.flavor_rules import FlavorPolicy
from outpost.hooks import Outpost, load_hooks
from outpost.models import ServiceId
from outpost.proxies import TrustedProxies
from outpost.ratelimit import LoginGuard
from outpost.redis_client import redis_client
from outpost.settings import Settings, load_settings
from outpost.store import Replication, Store
from outpost.upstream_config import (
    JupyterHubOutpost,
    chooses_spawner,
    hub_client_options,
    load_upstream,
    with_global_max,
)

if TYPE_CHECKING:  # cold start: a poll function never calls a hub, so it never imports httpx
    import httpx

    from outpost.hub import HubClient


class Background(Protocol):
    """Where async starts and stops go: `outpost.lifecycle.events.Background`, handed in by the entry point."""

    async def submit(self, kind: str, sid: ServiceId) -> None: ...


_configured: Settings | None = None
_background: Callable[[Runtime], Background] | None = None
_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = weakref.WeakKeyDictionary()


@dataclass
class Runtime:
    settings: Settings
    store: Store
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # Built on first use: a poll never calls a hub, so a poll function never imports httpx.
    @cached_property
    def http(self) -> httpx.AsyncClient:
        """The client for hubs' URLs: it connects only to addresses the outpost may call."""
        from outpost.guarded_http import callback_client  # cold start: see above (it loads httpx)

        return callback_client(
            self.settings.own_ports(), **hub_client_options(self.upstream, self.settings.hub_timeout_seconds)
        )

    @cached_property
    def sink_http(self) -> httpx.AsyncClient:
        """The client for the event sink. A plain-HTTP sink (the Knative broker, inside the cluster)
        uses no TLS, so nothing to verify and no CA bundle to load, a large share of an async start's
        cold start (docs/performance.md). An https sink is verified as usual."""
        import httpx  # cold start: see `http`

        plain = httpx.URL(self.settings.events_sink or "").scheme == "http"  # schemes compare lower-cased
        return httpx.AsyncClient(timeout=self.settings.hub_timeout_seconds, verify=not plain)

    @cached_property
    def hub(self) -> HubClient:
        from outpost.hub import HubClient  # cold start: see `http`

        return HubClient(self.http, self.settings.hub_retries, self.callbacks)

    @cached_property
    def callbacks(self) -> CallbackPolicy:
        options = self.settings.hub_options
        return CallbackPolicy({hub: o.callback_urls for hub, o in options.items()}, self.settings.own_ports())

    @cached_property
    def credentials(self) -> dict[str, str]:
        return self.settings.hub_credentials()

    @cached_property
    def hub_logins(self) -> HubLogins:
        """The credentials and the headers that proved them (this runtime's, so never older than its settings)."""
        return HubLogins(self.credentials)

    @cached_property
    def proxies(self) -> TrustedProxies:
        return self.settings.proxies()

    @cached_property
    def guard(self) -> LoginGuard:
        return LoginGuard(self.store.logins, self.settings.login_limits())

    @cached_property
    def config(self) -> Config:
        """The administrator's `outpost_config.py`: backend options and hooks."""
        return load_backend_config(self.settings.backend_config)

    @cached_property
    def hooks(self) -> Outpost:
        return load_hooks(self.config)

    @cached_property
    def upstream(self) -> JupyterHubOutpost:
        """The same file's `c.JupyterHubOutpost.*`: upstream's names, mapped by `outpost.upstream_config`."""
        return load_upstream(self.config)

    @cached_property
    def flavor_policy(self) -> FlavorPolicy:
        return with_global_max(self.settings.flavor_policy(self.hooks.normalise_authentication), self.upstream)

    @cached_property
    def credit_policy(self) -> CreditPolicy:
        return self.settings.credit_policy()

    @cached_property
    def backend_name(self) -> str:
        return "spawner" if chooses_spawner(self.upstream, self.settings.backend) else self.settings.backend

    @cached_property
    def backend(self) -> Backend:
        # Imported here so a poll function does not pay for backends it never uses.
        name = self.backend_name
        if name == "local":
            from outpost.backends.local import LocalBackend

            return LocalBackend(self.config, self.settings.data_dir, self.store)
        if name == "kubernetes":
            from outpost.backends.kubernetes.backend import PodBackend

            return PodBackend(self.config, self.settings.namespace)
        if name == "slurm":
            from outpost.backends.slurm.backend import SlurmJobBackend

            return SlurmJobBackend(self.config, self.store.snapshots)
        if name == "spawner":
            from outpost.backends.spawner import SpawnerBackend

            spawner_class = self.hooks.spawner_class or self.upstream.spawner_class
            if spawner_class is None:
                raise ConfigurationError(
                    "the spawner backend needs c.Outpost.spawner_class (or c.JupyterHubOutpost.spawner_class)"
                )
            return SpawnerBackend(self.config, spawner_class, self.settings.data_dir)
        raise ConfigurationError(f"backend {name!r} is not available in this build")

    @cached_property
    def background(self) -> Background:
        if _background is None:
            raise ConfigurationError(
                "this entry point hands no work to the background (outpost.runtime.use_background)"
            )
        return _background(self)

    async def aclose(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        backend = self.__dict__.get("backend")  # only if this runtime ever built it
        if backend is not None and hasattr(backend, "aclose"):
            await backend.aclose()
        for client in ("http", "sink_http"):
            if client in self.__dict__:
                await self.__dict__[client].aclose()
        await self.store.aclose()


def use_settings(settings: Settings | None) -> None:
    """Serve with these settings instead of loading them from the environment (dev server, tests)."""
    global _configured
    _configured = settings
    _runtimes.clear()


def use_background(background: Callable[[Runtime], Background]) -> None:
    """Hand async starts and stops to this (called by the entry points that take them)."""
    global _background
    _background = background


def replication_of(settings: Settings) -> Replication:
    return Replication(settings.redis_min_replicas, settings.redis_wait_timeout_ms)


def build_runtime(settings: Settings) -> Runtime:
    logs.configure(json_format=settings.log_format == "json")
    store = Store(redis_client(settings), Crypt(settings.crypt_keys()), replication_of(settings))
    return Runtime(settings, store)


async def get_runtime() -> Runtime:
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        runtime = build_runtime(_configured or load_settings())
        _runtimes[loop] = runtime
        # Everything built so far (modules, classes, settings, clients) lives as long as the
        # process: keep it out of the collector's way, so full collections stay short.
        if not gc.get_freeze_count():
            gc.freeze()
    return runtime


async def close_runtime() -> None:
    runtime = _runtimes.pop(asyncio.get_running_loop(), None)
    if runtime is not None:
        await runtime.aclose()

"""Any JupyterHub Spawner as the backend (`c.Outpost.spawner_class`), so an administrator keeps the
`outpost_config.py` written for KubeSpawner, BatchSpawner, ...

Each invocation builds the spawner with a user and hub stand-in made from the request (the hub has
already computed the server's environment: it is used as the spawner's `get_env()` base), applies the
allowed `misc` overrides and the flavor's resources to its traits, and keeps `get_state()` in the
record; a later invocation (maybe another process) rebuilds it and calls `load_state()` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import inspect
import logging
import os
import shutil
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.spawner import Spawner  # type: ignore[import-untyped]
from traitlets import Dict, TraitError
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from outpost import names
from outpost.backends import common, sockets
from outpost.backends.base import Progress, SaveState, Started, StartSpec
from outpost.backends.standins import HubStandIn, OrmSpawnerStandIn, user_of
from outpost.errors import BackendError, ConfigurationError, HostNotAllowed, InvalidBody, shown
from outpost.files import private_dir
from outpost.models import ServiceId

log = logging.getLogger(__name__)
PROGRESS_DRAIN_SECONDS = 1.5  # a progress generator's last look after the start finished
# What the spawner decides itself; everything else comes from the hub's env.
_SPAWNER_DECIDES = ("JUPYTERHUB_SERVICE_URL", *common.SSL_ENV.values())
_FROM_HUB = ("JUPYTERHUB_USER", "JUPYTERHUB_USER_ID", "JUPYTERHUB_API_URL", "JUPYTERHUB_SERVICE_PREFIX")


class _HubEnvironment(Spawner):  # type: ignore[misc]
    """Sits just above `Spawner` in the adapted class's MRO: `super().get_env()` of the administrator's
    class lands here and gets the environment the hub sent, not one built from a hub we do not have."""

    request_env = Dict()

    def get_env(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in self.env_keep if key in os.environ}
        env.update(self.request_env)
        scheme = common.scheme(self.internal_ssl)
        url = common.service_url(scheme, self.ip or "127.0.0.1", self.port, self.request_env)
        decided = {"JUPYTERHUB_SERVICE_URL": url}
        if self.cert_paths:
            decided.update(common.ssl_env(self.cert_paths))
        env.update({key: value for key, value in decided.items() if key in _SPAWNER_DECIDES})
        env.update(common.resource_env({key: getattr(self, key) for key in common.RESOURCE_KEYS}))
        for key, value in self.environment.items():  # the administrator's, last (as in JupyterHub)
            env[key] = value(self) if callable(value) else value
        return env

    # Never reached (the administrator's class comes first in the MRO); Spawner requires them.
    async def start(self) -> Any:
        raise NotImplementedError

    async def stop(self, now: bool = False) -> None:
        raise NotImplementedError

    async def poll(self) -> int | None:
        raise NotImplementedError


_ADAPTED: dict[type, type] = {}


def adapted(cls: type[Spawner]) -> type[Spawner]:
    """The administrator's class with the hub's environment underneath; its config section
    `Outpost<Class>` holds the per-start overrides, above everything the administrator configured."""
    if cls not in _ADAPTED:
        _ADAPTED[cls] = type(f"Outpost{cls.__name__}", (cls, _HubEnvironment), {})
    return _ADAPTED[cls]


def resolve(spawner_class: type | str) -> type[Spawner]:
    """A class, an import path or a JupyterHub entry-point name ("localprocess", "kubespawner")."""
    found: Any = spawner_class
    if isinstance(spawner_class, str):
        named = entry_points(group="jupyterhub.spawners", name=spawner_class)
        try:
            found = next(iter(named)).load() if named else import_item(spawner_class)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(f"cannot import spawner class {spawner_class!r}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, Spawner)):
        raise ConfigurationError(f"{spawner_class!r} is not a JupyterHub Spawner class")
    return found


def _address(result: Any, ssl: bool) -> str:
    """A spawner's start() answer, (ip, port) or a URL, as "scheme://host:port"."""
    if isinstance(result, tuple | list):
        ip, port = result
        return f"{common.scheme(ssl)}://{common.connect_host(ip)}:{int(port)}"
    url = urlparse(str(result))
    if not url.hostname:
        raise BackendError(f"the spawner answered an address without a host: {result!r}")
    return f"{url.scheme}://{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"


class SpawnerBackend:
    def __init__(self, config: Config, spawner_class: type | str, data_dir: Path) -> None:
        self._config = config
        self._class = resolve(spawner_class)
        self._certs = data_dir / "spawner-certs"
        # The instances this process started: a local process's Popen handle lives there, as in JupyterHub.
        self._live: dict[str, Spawner] = {}

    def _build(self, cls: type[Spawner], env: dict[str, str], name: str, overrides: dict[str, Any]) -> Spawner:
        adapted_class = adapted(cls)
        config = copy.deepcopy(self._config)
        config[adapted_class.__name__] = Config(overrides)
        user = user_of(env)
        try:
            spawner: Spawner = adapted_class(
                config=config, user=user, hub=HubStandIn(env.get("JUPYTERHUB_API_URL", "")),
                orm_spawner=OrmSpawnerStandIn(name), request_env=env, api_token=env.get("JUPYTERHUB_API_TOKEN", ""),
            )  # fmt: skip
        except TraitError as exc:
            raise InvalidBody(f"invalid backend option: {exc}") from None
        return spawner

    def _state(
        self, sid: ServiceId, env: dict[str, str], overrides: dict[str, Any], spawner_state: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "class": f"{self._class.__module__}.{self._class.__qualname__}",
            "service": [sid.hub, sid.name, sid.start_id],
            "env": {key: env[key] for key in _FROM_HUB if key in env},
            "overrides": overrides,
            "spawner": spawner_state,
            "certs_dir": "",
        }

    def adopted_state(
        self, sid: ServiceId, env: dict[str, str], misc: dict[str, Any], spawner_state: dict[str, Any]
    ) -> dict[str, Any]:
        """The state of a server another outpost started with this spawner class (its `get_state()`),
        so this backend can poll and stop it: the start's `misc` traits are applied as ours would be."""
        traits = self._class.class_traits(config=True)
        return self._state(sid, env, {key: value for key, value in misc.items() if key in traits}, spawner_state)

    def _overrides(self, spec: StartSpec) -> dict[str, Any]:
        """misc first, the flavor's resources over it: a hub cannot raise its own limits."""
        traits = self._class.class_traits(config=True)
        return {key: value for key, value in {**spec.misc, **spec.resources}.items() if key in traits}

    async def start(self, spec: StartSpec, save_state: SaveState, progress: Progress) -> Started:
        overrides = self._overrides(spec)
        spawner = self._build(self._class, spec.env, spec.sid.name, overrides)
        if "dns_name_template" in overrides:
            self._check_service_name(spawner)
        state = self._state(spec.sid, spec.env, overrides, {})
        ssl = common.uses_tls(spec.certs)
        if ssl:
            state["certs_dir"] = str(await self._install_certs(spawner, spec))
        await save_state(state)  # before start: a stop must find what a crashed start left
        try:
            result = await self._run_start(spawner, progress)
            address = _address(result, ssl)
            await _prove_local_address(spawner, address, float(spawner.http_timeout))
        except Exception:
            await self._discard(spawner, state)
            raise
        state["spawner"] = spawner.get_state()
        self._live[_key(state)] = spawner
        log.info("%s started %s", self._class.__name__, spec.sid)
        return Started(address=address, state=state, spawner=spawner, response=result)

    def _check_service_name(self, spawner: Spawner, host: object = None) -> None:
        """A KubeSpawner-like spawner publishes `dns_name` (or `host`), rendered from a template the hub overrode:
        it must still name the Service of the spawner's own pod (or be what the administrator's template gives)."""
        pod, namespace = (getattr(spawner, key, None) for key in ("pod_name", "namespace"))
        host = getattr(spawner, "dns_name", None) if host is None else host
        if not (isinstance(pod, str) and isinstance(namespace, str) and isinstance(host, str)):
            return  # not a spawner that names its pods: nothing to check against
        template = _configured(self._class, self._config, "dns_name_template")
        try:  # the administrator's template, filled in as KubeSpawner does
            administrators = template.format(name=pod, namespace=namespace) if isinstance(template, str) else ""
        except (KeyError, IndexError, ValueError, AttributeError):
            administrators = ""
        if names.is_service_host(host, pod, namespace, "cluster.local", short=False) or (
            names.dns_key(host) == names.dns_key(administrators)
        ):
            return
        raise HostNotAllowed(
            f"dns_name_template gives {shown([host])}, not a name of the server's Service {pod} in namespace "
            f"{namespace}: use {{name}}.{{namespace}}.svc.cluster.local or a shorter form of it"
        )

    async def prove_adopted(self, state: dict[str, Any], address: str, timeout: float) -> None:
        """That a server another outpost started (`adopted_state`) serves `address`, "scheme://host:port", proved
        as a start proves its own: a local process of the spawner (and none that this process descends from)
        listens there, or the address is the Service of a KubeSpawner-like spawner's pod, at the spawner's port.
        Raises AddressTaken, HostNotAllowed or BackendError; an address no check can prove is refused."""
        spawner = self._resume(state)
        pid = getattr(spawner, "pid", 0)
        url = urlparse(address)
        if isinstance(pid, int) and pid > 0:
            if os.getpid() in sockets.process_tree(pid):  # pid 1, or a parent: every process would count as it
                raise BackendError(f"process {pid} is not a server: this outpost's own process descends from it")
            await _prove_local_address(spawner, address, timeout)
            return
        if isinstance(getattr(spawner, "pod_name", None), str) and isinstance(getattr(spawner, "namespace", None), str):
            self._check_service_name(spawner, url.hostname or "")
            if url.port != int(spawner.port):
                raise HostNotAllowed(f"port {url.port} is not the port of the server's Service ({spawner.port})")
            return
        raise BackendError(
            f"{self._class.__name__} runs neither a local process nor a pod: no check proves its address"
        )

    async def _install_certs(self, spawner: Spawner, spec: StartSpec) -> Path:
        """Certificates as files, as JupyterHub hands them to a spawner (then its move_certs)."""
        private_dir(self._certs.parent)  # the data directory, when this backend is the first to create it
        directory = private_dir(self._certs) / common.service_dir_name(spec.sid)
        directory.mkdir(exist_ok=True, mode=0o700)
        trust = {f"trust-{name}": text for name, text in spec.trust_bundles.items()}
        paths = common.write_private_files(directory, {**spec.certs, **trust})
        spawner.internal_ssl = True
        spawner.internal_trust_bundles = {name: paths[f"trust-{name}"] for name in spec.trust_bundles}
        moved = spawner.move_certs({key: paths[key] for key in ("keyfile", "certfile", "cafile") if key in paths})
        spawner.cert_paths = await moved if inspect.isawaitable(moved) else moved
        return directory

    async def _run_start(self, spawner: Spawner, progress: Progress) -> Any:
        starting = asyncio.ensure_future(spawner.start())
        spawner._spawn_future = starting  # progress() generators stop once it is done (as in JupyterHub)
        spawner._spawn_pending = True
        forwarder = asyncio.create_task(_forward_progress(spawner, progress))
        try:
            return await asyncio.wait_for(starting, timeout=spawner.start_timeout)
        except TimeoutError:
            raise BackendError(f"the server did not start within {spawner.start_timeout} seconds") from None
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from None
        finally:
            spawner._spawn_pending = False
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(forwarder, PROGRESS_DRAIN_SECONDS)

    async def _discard(self, spawner: Spawner, state: dict[str, Any]) -> None:
        try:
            await spawner.stop(now=True)
        except Exception:
            log.exception("cleaning up after a failed start failed")
        if state.get("certs_dir"):
            shutil.rmtree(state["certs_dir"], ignore_errors=True)

    def _resume(self, state: dict[str, Any]) -> Spawner:
        live = self._live.get(_key(state))
        if live is not None:
            return live
        spawner = self._build(resolve(state["class"]), state["env"], state["service"][1], state["overrides"])
        spawner.load_state(state["spawner"])
        return spawner

    async def poll(self, state: dict[str, Any]) -> int | None:
        return await _exit_code(self._resume(state))

    async def stop(self, state: dict[str, Any]) -> None:
        spawner = self._resume(state)
        try:
            stopped = spawner.stop()
            if inspect.isawaitable(stopped):
                await stopped
        except Exception as exc:
            raise BackendError(f"the spawner could not stop the server: {type(exc).__name__}: {exc}") from None
        self._live.pop(_key(state), None)
        spawner.clear_state()
        if state.get("certs_dir"):
            shutil.rmtree(state["certs_dir"], ignore_errors=True)

    async def logs(self, state: dict[str, Any]) -> list[str]:
        return []  # Spawners have no log interface

    async def running(self) -> list[tuple[ServiceId, dict[str, Any]]]:
        return []  # nor a listing: orphans of a spawner backend are the spawner's business

    keeps_identity = False

    async def remember(self, state: dict[str, Any], sealed: str) -> None:
        return None  # nothing listed, nothing to re-adopt

    async def recall(self, state: dict[str, Any]) -> str | None:
        return None


def _configured(cls: type[Spawner], config: Config, trait: str) -> Any:
    """A trait's value as the administrator configured it for `cls` (a hub's overrides left out)."""
    for klass in cls.mro():
        if klass.__name__ in config and trait in config[klass.__name__]:
            return config[klass.__name__][trait]
    traits = cls.class_traits()
    return traits[trait].default_value if trait in traits else None


def _key(state: dict[str, Any]) -> str:
    return "/".join(state["service"])


async def _exit_code(spawner: Spawner) -> int | None:
    status = spawner.poll()
    result = await status if inspect.isawaitable(status) else status
    return None if result is None else int(result)


async def _prove_local_address(spawner: Spawner, address: str, timeout: float) -> None:
    """A spawner that runs a local process (it has a pid, as LocalProcessSpawner): its address is published
    only once that process, or one it started, listens there and nobody else does. A spawner answers as soon
    as it has launched the process, so this also waits for the server, as JupyterHub would (http_timeout)."""
    pid = getattr(spawner, "pid", 0)
    if not isinstance(pid, int) or pid <= 0:
        return  # a pod, a batch job: no local process to look at
    url = urlparse(address)
    members = functools.partial(sockets.process_tree, pid)
    exit_code = functools.partial(_exit_code, spawner)
    await sockets.wait_until_served(url.hostname or "", url.port or 0, members, exit_code, timeout)


async def _forward_progress(spawner: Spawner, progress: Progress) -> None:
    """The spawner's progress() events, to the hub, until the start is over."""
    percent = 40
    try:
        async with contextlib.aclosing(spawner.progress()) as events:
            async for event in events:
                if isinstance(event.get("progress"), int | float):
                    percent = max(1, min(int(event["progress"]), 99))
                if event.get("message"):
                    await progress(percent, str(event["message"]))
    except Exception:  # progress is a courtesy; it never fails a start
        log.warning("progress events of %s failed", type(spawner).__name__, exc_info=True)

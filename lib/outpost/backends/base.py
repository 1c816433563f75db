"""The backend contract: start a server, poll it, stop it, read its logs.

`state` is a JSON-able dict (JupyterHub's get_state/load_state contract): whatever a backend returns
in `Started.state`, or hands to `save_state` while starting, is stored encrypted and given back to
poll/stop/logs, possibly in another process that never saw the start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from traitlets.config import Config, Configurable
from traitlets.config.loader import PyFileConfigLoader

from outpost.errors import ConfigurationError, InvalidBody, OverrideNotAllowed
from outpost.models import ServiceId

OptionsT = TypeVar("OptionsT", bound=Configurable)
SaveState = Callable[[dict[str, Any]], Awaitable[None]]
Progress = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True)
class StartSpec:
    sid: ServiceId
    env: dict[str, str]
    misc: dict[str, Any] = field(default_factory=dict)  # overrides already allowed by policy
    certs: dict[str, str] = field(default_factory=dict)
    trust_bundles: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # from the flavor
    runtime_seconds: int | None = None  # the flavor's runtime limit (the Slurm backend makes it the job's --time)
    user_options: dict[str, Any] = field(default_factory=dict)  # the hub's, as sent (a job_user callable reads them)


@dataclass(frozen=True)
class Started:
    address: str  # "http://host:port" or "https://host:port", as the hub expects it
    state: dict[str, Any]
    # The spawner backend's Spawner and its start() answer, for upstream's sanitize_start_response.
    spawner: object | None = None
    response: object = None


class Backend(Protocol):
    # Whether `remember` keeps anything: without it, a server whose record is lost cannot be re-adopted.
    keeps_identity: bool

    async def start(self, spec: StartSpec, save_state: SaveState, progress: Progress) -> Started:
        """Start the server and wait until it accepts connections; raise BackendError on failure."""

    async def poll(self, state: dict[str, Any]) -> int | None:
        """None while the server runs, its exit code once it has stopped."""

    async def stop(self, state: dict[str, Any]) -> None:
        """Stop the server and clean up; stopping a server that is already gone is not an error."""

    async def logs(self, state: dict[str, Any]) -> list[str]:
        """The tail of the server's output, for `collect_logs`."""

    async def running(self) -> list[tuple[ServiceId, dict[str, Any]]]:
        """Every server this backend runs, with its state: the reconciler re-adopts those whose record
        was lost (see `recall`) and stops the others."""

    async def remember(self, state: dict[str, Any], sealed: str) -> None:
        """Keep a running server's sealed identity with the server (a file, a Secret the pod owns)."""

    async def recall(self, state: dict[str, Any]) -> str | None:
        """The sealed identity kept by `remember`, if any."""


def load_backend_config(path: Path | None) -> Config:
    """Read the administrator's `outpost_config.py` (`c.LocalProcessBackend.cmd = [...]`)."""
    if path is None or not path.exists() or not path.read_text().strip():
        return Config()
    try:
        config: Config = PyFileConfigLoader(path.name, str(path.parent)).load_config()
    except Exception as exc:  # a syntax or runtime error in the admin's file
        raise ConfigurationError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    return config


def apply_overrides(options: Configurable, misc: dict[str, Any]) -> None:
    """Set the `misc` keys that name traits of this backend; others belong to other backends."""
    for key, value in misc.items():
        if options.has_trait(key) and options.trait_metadata(key, "config"):
            setattr(options, key, value)


def options_for_start(defaults: OptionsT, misc: dict[str, Any], admin_only: frozenset[str]) -> OptionsT:
    """A backend's options for one start: `defaults` itself when `misc` overrides none of them (most starts:
    the shared object, unchanged), else a copy with the overrides. An option in `admin_only` is refused."""
    if not admin_only.isdisjoint(misc):
        raise OverrideNotAllowed(
            f"This outpost does not allow overriding: {', '.join(sorted(admin_only & set(misc)))}."
        )
    if set(defaults.class_trait_names(config=True)).isdisjoint(misc):
        return defaults
    options = type(defaults)(config=defaults.config)
    try:
        apply_overrides(options, misc)
    except Exception as exc:  # a trait rejected the value's type
        raise InvalidBody(f"invalid backend option in misc: {exc}") from None
    return options

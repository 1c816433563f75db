"""Shapes on the wire (pydantic, validated) and inside (frozen dataclasses)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, field_validator

from outpost.logs import escape

MAX_NAME_LENGTH = 255


def _stringify_scalars(value: Any) -> Any:
    """JupyterHub's env holds strings, but an admin hook may add numbers or booleans."""
    if isinstance(value, dict):
        return {k: str(v) if isinstance(v, int | float | bool) else v for k, v in value.items()}
    return value


class StartRequest(BaseModel):
    """The body of `POST /services`, exactly as the OutpostSpawner sends it."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)  # built at the first start, not at import

    name: StrictStr = Field(max_length=MAX_NAME_LENGTH)
    env: Annotated[dict[str, StrictStr], BeforeValidator(_stringify_scalars)] = Field(
        default_factory=dict,
        description="The server's environment: JUPYTERHUB_*, JUPYTER_* and JPY_* names (those that load code "
        "from a path only when allowed), plus the names the hub's allowedEnv patterns allow",
    )
    user_options: dict[str, Any] = Field(default_factory=dict)
    misc: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend options to override, as far as the hub's allowedOverrides allows (by default "
        "the OutpostSpawner's: dns_name_template, pod_name_template, internal_ssl, port, ip, services_enabled, "
        "extra_labels); strings are text and plain {field} placeholders",
    )
    certs: dict[str, StrictStr] = Field(default_factory=dict)
    internal_trust_bundles: dict[str, StrictStr] = Field(default_factory=dict)
    authentication: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if "/" in value or not value.isprintable() or value in (".", ".."):
            raise ValueError("name must be printable, not '.' or '..', and contain no '/'")
        return value

    @field_validator("user_options")
    @classmethod
    def _start_id_is_scalar(cls, value: dict[str, Any]) -> dict[str, Any]:
        start_id = value.get("start_id", "0")
        if not isinstance(start_id, str | int) or isinstance(start_id, bool):
            raise ValueError("user_options.start_id must be a string or an integer")
        text = str(start_id)
        if "/" in text or not text or not text.isprintable() or text in (".", "..") or len(text) > MAX_NAME_LENGTH:
            raise ValueError("user_options.start_id must be 1-255 printable characters without '/', not '.' or '..'")
        flavor = value.get("flavor")
        if flavor is not None and not isinstance(flavor, str):
            raise ValueError("user_options.flavor must be a string")
        return value

    @property
    def start_id(self) -> str:
        return str(self.user_options.get("start_id", "0"))

    @property
    def flavor(self) -> str | None:
        flavor = self.user_options.get("flavor")
        return flavor if isinstance(flavor, str) and flavor else None

    @property
    def user(self) -> str:
        return self.env.get("JUPYTERHUB_USER", "")

    def without_certs(self) -> dict[str, Any]:
        """What is kept: certificates are used for the start and then dropped."""
        return self.model_dump(exclude={"certs", "internal_trust_bundles"})


class Phase(enum.StrEnum):
    PENDING = "pending"  # stored, backend not called yet
    STARTING = "starting"  # the backend is starting the server
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


ACTIVE_PHASES = frozenset({Phase.PENDING, Phase.STARTING, Phase.RUNNING})
TERMINAL_PHASES = frozenset({Phase.STOPPED, Phase.FAILED})


@dataclass(frozen=True)
class ServiceId:
    """A service is keyed by the hub's credential name, the server name and the start_id."""

    hub: str
    name: str
    start_id: str

    def __str__(self) -> str:
        """How logs show it: each part escaped, since the hub chose the name and the start id."""
        name = escape(self.name) if self.name else "<default>"
        return f"{escape(self.hub)}/{name}/{escape(self.start_id)}"


@dataclass(frozen=True)
class ServiceMeta:
    """The plain (unencrypted) part of a record: enough to list, poll and count."""

    id: ServiceId
    user: str
    user_id: str
    flavor: str
    phase: Phase
    start_date: str
    end_date: str
    last_update: str
    exit_code: int | None
    address: str
    state_stored: bool
    # The last status an event reported (None: running) and when (epoch seconds; 0: never).
    observed_exit: int | None = None
    observed_at: float = 0.0
    # The hub reaches it through an SSH tunnel: an SSH daemon opened a forward to it, or the hub took its
    # address from the setup-tunnel call. Only such tunnels are rebuilt after a restart (`sshd.tunnels`).
    tunnelled: bool = False

    def listing(self) -> dict[str, Any]:
        """One entry of `GET /services`."""
        return {
            "name": self.id.name,
            "start_id": self.id.start_id,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "jupyterhub": self.id.hub,
            "jupyterhub_userid": self.user_id,
            "last_update": self.last_update,
            "state_stored": self.state_stored,
            "start_pending": self.phase in (Phase.PENDING, Phase.STARTING),
            "stop_pending": self.phase == Phase.STOPPING,
        }

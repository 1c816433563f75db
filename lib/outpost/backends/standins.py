"""What a JupyterHub Spawner reads of the hub's objects, made from a start request's environment.

The spawner backend hands them to the administrator's Spawner; upstream's `sanitize_start_response`
gets them on a `SpawnerView` when another backend ran the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlparse


@dataclass
class UserStandIn:
    """What spawners read of JupyterHub's User."""

    name: str
    id: int
    groups: tuple[str, ...] = ()
    server: None = None  # the hub's view of the server; the spawner does not need it here

    @property
    def escaped_name(self) -> str:
        return quote(self.name, safe="@~")

    @property
    def url(self) -> str:
        return f"/user/{self.escaped_name}/"


@dataclass
class OrmSpawnerStandIn:
    """Where a Spawner reads its server name (JupyterHub's database row of the spawner)."""

    name: str
    server: None = None

    @property
    def display_name(self) -> str:
        return self.name


@dataclass
class HubStandIn:
    """What spawners read of JupyterHub's Hub object."""

    api_url: str

    @property
    def base_url(self) -> str:
        path = urlparse(self.api_url).path.rstrip("/")
        return (path.removesuffix("/api") or "/hub") + "/"

    @property
    def public_host(self) -> str:
        return ""


def user_of(env: dict[str, str]) -> UserStandIn:
    user_id = env.get("JUPYTERHUB_USER_ID", "")
    return UserStandIn(env.get("JUPYTERHUB_USER", ""), int(user_id) if user_id.isdigit() else 0)


@dataclass
class SpawnerView:
    """What upstream's `sanitize_start_response(spawner, response)` gets when no Spawner ran the server:
    the parts of a Spawner it could use (server name, user, hub, ip, port) and the hub's credential name."""

    name: str
    user: UserStandIn
    hub: HubStandIn
    ip: str
    port: int
    jupyterhub_name: str
    start_id: str

    @classmethod
    def of(cls, hub: str, name: str, start_id: str, env: dict[str, str], address: str) -> SpawnerView:
        url = urlparse(address if "://" in address else f"//{address}")
        return cls(name, user_of(env), HubStandIn(env.get("JUPYTERHUB_API_URL", "")), url.hostname or "",
                   url.port or 0, hub, start_id)  # fmt: skip

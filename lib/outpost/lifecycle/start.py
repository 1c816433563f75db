"""Starting a server: the hub's request checked and admitted, the backend run (now or in the background),
the address claimed and answered."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from prometheus_client import Histogram

from outpost import errors, logs, upstream_config
from outpost.backends import output
from outpost.backends.base import Started, StartSpec
from outpost.env_policy import screen_env
from outpost.flavors import runtime_seconds
from outpost.hooks import sanitized
from outpost.lifecycle import quota
from outpost.lifecycle.notes import callback_notes
from outpost.models import Phase, ServiceId, StartRequest
from outpost.overrides import refused_overrides, refused_templates
from outpost.runtime import Runtime
from outpost.store import UNREACHABLE, Claim

log = logging.getLogger(__name__)
Written = TypeVar("Written")
START_SECONDS = Histogram(
    "outpost_start_seconds", "Time to start a server (backend included), by outcome", ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)  # fmt: skip


async def request_start(runtime: Runtime, hub: str, request: StartRequest, *, in_background: bool) -> str | None:
    """A hub's start request: checked, admitted and recorded PENDING, then started now (the address the
    hub gets) or handed to the background (None: the hub hears of it through its events URL)."""
    sid = ServiceId(hub, request.name, request.start_id)
    request = await screened(runtime, hub, request)
    decision = await quota.admit(runtime, hub, request)
    certs = {"certs": request.certs, "internal_trust_bundles": request.internal_trust_bundles}
    created = await runtime.store.create(
        sid,
        user=request.user,
        user_id=request.env.get("JUPYTERHUB_USER_ID", ""),
        flavor=request.flavor,
        body=request.without_certs(),
        certs=certs if in_background and request.certs else None,
        limits=decision.limits,
        runtime_seconds=runtime_seconds(decision.flavor) if decision.flavor else None,
    )
    if not created.ok:
        raise quota.refused(decision, request.flavor or "", created)
    log.info("start requested for %s (%s)", sid, "async" if in_background else "sync")
    if in_background:
        try:
            await runtime.background.submit("start", sid)
        except errors.EventsUnavailable:
            await runtime.store.forget(sid)
            raise
        return None
    return await _start(runtime, sid, request.without_certs(), certs, announce_tunnel=False)


async def screened(runtime: Runtime, hub: str, request: StartRequest) -> StartRequest:
    """The request as this hub may send it, or the refusal: `misc` overrides the hub's policy and the administrator's
    hooks allow, plain `{field}` templates, `env` names the hub may pass. Every start goes through here, and so does
    every record `outpost import-upstream` brings in."""
    options = runtime.settings.hub(hub)
    refused = refused_overrides(hub, request.misc, options.allowed_overrides, runtime.hooks.allow_override)
    if refused:
        raise errors.OverrideNotAllowed(f"This outpost does not allow overriding: {errors.shown(refused)}.")
    if not await upstream_config.allows_override(runtime.upstream, hub, request.misc):
        raise errors.OverrideNotAllowed(
            f"This outpost does not allow overriding: {errors.shown(sorted(request.misc))}."
        )
    refused = refused_templates(request.misc)
    if refused:
        raise errors.TemplateNotAllowed(
            f"These options hold more than plain {{field}} placeholders (or too many): {errors.shown(refused)}."
        )
    screened_env = screen_env(request.env, options.allowed_env)
    if screened_env.refused:
        raise errors.EnvNotAllowed(
            f"This outpost does not pass these environment variables to servers: {errors.shown(screened_env.refused)}. "
            "Its administrator can allow them for this hub (hubOptions.<hub>.allowedEnv)."
        )
    return request.model_copy(update={"env": screened_env.env})


async def run_background_start(runtime: Runtime, sid: ServiceId) -> None:
    """The start of an `execution-type: async` request; a no-op when already done or stopped."""
    meta = await runtime.store.meta(sid)
    if meta is None or meta.phase != Phase.PENDING:
        return
    body, _, _ = await runtime.store.secrets(sid)
    certs = await runtime.store.take_certs(sid)
    try:
        await _start(runtime, sid, body, certs, announce_tunnel=True)
    except errors.SpawnFailed:
        pass  # already reported to the hub as a failed event
    except errors.ServiceExists:
        # Another delivery of this event (at least once, possibly at the same moment) took the start:
        # done here, and acknowledged rather than refused.
        log.info("start of %s already under way", sid)


async def _start(
    runtime: Runtime, sid: ServiceId, body: dict[str, Any], certs: dict[str, Any], *, announce_tunnel: bool
) -> str:
    """Run the backend for a PENDING record; the record is forgotten at once if the start fails."""
    claimed = runtime.store.transition(sid, Phase.STARTING, (Phase.PENDING,))
    if await _unless_unacknowledged(runtime, sid, claimed, redelivered=announce_tunnel) != Phase.PENDING:
        raise errors.ServiceExists("the start of this service is already under way")
    env: dict[str, str] = body.get("env", {})

    events = await upstream_config.sends_events(runtime.upstream, sid.hub)

    async def progress(percent: int, message: str) -> None:
        if events:
            await runtime.hub.progress(env, sid, percent, message)

    async def save_state(state: dict[str, Any]) -> None:
        await runtime.store.save_backend_state(sid, state)

    async def give_up(failure: errors.OutpostError) -> None:
        """Forget the record of a failed start and say so."""
        START_SECONDS.labels("failed").observe(time.perf_counter() - clock)
        # The whole message: a backend's ends with the server's last output (bounded by backends.output).
        log.warning("start of %s failed: %s", sid, logs.escape(failure.message, limit=output.MESSAGE_CHARS))
        await runtime.store.forget(sid)
        if announce_tunnel:  # an async start reports failure through the hub's event stream
            await runtime.hub.progress(env, sid, 100, f"Start failed: {failure.message}", failed=True)
        await quota.send_flavor_update(runtime, sid, env)

    flavor = runtime.flavor_policy.flavors.get(body.get("user_options", {}).get("flavor") or "")
    spec = StartSpec(
        sid=sid,
        env=env,
        misc=body.get("misc", {}),
        certs=certs.get("certs", {}),
        trust_bundles=certs.get("internal_trust_bundles", {}),
        resources=dict(flavor.resources) if flavor else {},
        runtime_seconds=runtime_seconds(flavor) if flavor else None,
        user_options=body.get("user_options", {}),
    )
    await progress(10, "Start request received by the outpost")
    for note in callback_notes(runtime, sid, env, announce=True):
        await progress(10, note)  # shown while the server starts, when the events URL itself is called
    clock = time.perf_counter()
    try:
        started = await runtime.backend.start(spec, save_state, progress)
        address = await _answer(runtime, sid, env, started)
    except Exception as exc:
        failure = exc if isinstance(exc, errors.SpawnFailed | errors.BadRequest) else _unexpected(exc, sid)
        await give_up(failure)
        raise failure from None
    claim = await _unless_unacknowledged(
        runtime, sid, _claim_address(runtime, sid, _host_port(address), address), started.state
    )
    if claim.holder is not None:  # another live record's address: the first owner keeps it
        await runtime.backend.stop(started.state)
        taken = errors.AddressTaken(_host_port(address))
        await give_up(taken)
        raise taken
    START_SECONDS.labels("started").observe(time.perf_counter() - clock)
    if claim.found not in (Phase.PENDING, Phase.STARTING):
        # A stop arrived while we were starting: it wins.
        await runtime.backend.stop(started.state)
        await runtime.store.forget(sid)
        raise errors.BackendError("the server was stopped while it was starting")
    await _remember(runtime, sid, started.state)
    await progress(100, "Server is ready")
    await quota.send_flavor_update(runtime, sid, env)
    if announce_tunnel and address and env.get("JUPYTERHUB_SETUPTUNNEL_URL") and env.get("JUPYTERHUB_API_TOKEN"):
        url, token = env["JUPYTERHUB_SETUPTUNNEL_URL"], env["JUPYTERHUB_API_TOKEN"]
        if await runtime.hub.setup_tunnel(url, token, address, sid):  # the hub built a tunnel: rebuilt at restarts
            await runtime.store.mark_tunnelled(sid)
    log.info("started %s", sid)
    return address


async def _answer(runtime: Runtime, sid: ServiceId, env: dict[str, str], started: Started) -> str:
    """The address the hub gets, through the administrator's hooks; if one fails, the server stops."""
    try:
        address = sanitized(runtime.hooks, sid.hub, sid.name, started.address)
        return await upstream_config.start_answer(runtime.upstream, sid, env, started, address)
    except Exception:
        await runtime.backend.stop(started.state)
        raise


async def _unless_unacknowledged(
    runtime: Runtime,
    sid: ServiceId,
    write: Awaitable[Written],
    state: dict[str, Any] | None = None,
    *,
    redelivered: bool = False,
) -> Written:
    """A start's phase change. If the Redis replicas do not acknowledge it, or Redis went away during it
    (whether it was written is unknown), the start is undone (the server stopped, the record forgotten as far
    as Redis lets us) before the hub hears 503, so no failover can leave half of it. One exception:
    `redelivered` (a background start, whose event comes again when this delivery fails) with Redis gone
    before a server runs: nothing runs, and the PENDING record stays for the next delivery (or the
    reconciler)."""
    try:
        return await write
    except errors.ReplicasBehind:
        await _undo(runtime, sid, state)
        raise
    except UNREACHABLE:
        if state is not None or not redelivered:
            await _undo(runtime, sid, state)
        raise


async def _undo(runtime: Runtime, sid: ServiceId, state: dict[str, Any] | None) -> None:
    if state is not None:
        await runtime.backend.stop(state)
    await runtime.store.undo_start(sid)


async def _remember(runtime: Runtime, sid: ServiceId, state: dict[str, Any]) -> None:
    """The backend keeps the server's sealed identity, for the reconciler to re-adopt it should its record be
    lost; without it the server runs as well, and would be stopped as an orphan instead."""
    try:
        await runtime.backend.remember(state, await runtime.store.identity(sid))
    except OSError as exc:
        log.warning("the backend could not keep the identity of %s: %s", sid, exc)


def _host_port(address: str) -> str:
    return address.split("://", 1)[-1]


async def _claim_address(runtime: Runtime, sid: ServiceId, host_port: str, answer: str) -> Claim:
    """Mark the record RUNNING at its address, which no other live record may hold. Ports are reused: a holder
    whose server is gone (no poll has noticed yet) loses the address, and the claim is tried once more."""
    claim = await runtime.store.mark_running(sid, host_port, answer)
    if claim.holder is not None and await _server_gone(runtime, claim.holder):
        log.info("%s takes over %s's address: its server is gone", sid, claim.holder)
        claim = await runtime.store.mark_running(sid, host_port, answer, gone_holder=claim.holder)
    return claim


async def _server_gone(runtime: Runtime, holder: ServiceId) -> bool:
    """Whether the backend says the holder's server has stopped; when it cannot tell, the holder keeps it."""
    try:
        view = await runtime.store.meta_and_state(holder)
        if view is None:  # forgotten meanwhile
            return True
        state = view.state
        return state is not None and await runtime.backend.poll(state) is not None
    except Exception as exc:  # an undecryptable record, a backend that cannot be asked: no proof it is gone
        log.warning("cannot tell whether %s's server still runs (%s)", holder, type(exc).__name__)
        return False


def _unexpected(exc: Exception, sid: ServiceId) -> errors.BackendError:
    log.error("backend failed for %s", sid, exc_info=(type(exc), exc, exc.__traceback__))
    return errors.BackendError(f"the outpost's backend failed ({type(exc).__name__}); see the outpost's log")

"""The use cases, one function per route, composed from the store, the backend and the hub client."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any

from outpost import errors, metrics, pod_status, quota
from outpost.adoption import readopt
from outpost.api import Call, Reply
from outpost.backends.base import StartSpec
from outpost.env_policy import screen_env
from outpost.flavors import runtime_seconds
from outpost.hooks import sanitized
from outpost.models import ACTIVE_PHASES, TERMINAL_PHASES, Phase, ServiceId, StartRequest
from outpost.overrides import refused_overrides, refused_templates
from outpost.runtime import Runtime

log = logging.getLogger(__name__)


def _service_id(call: Call) -> ServiceId:
    return ServiceId(call.hub, call.params["name"], call.params.get("start_id", "0"))


async def ping(call: Call) -> Reply:
    return Reply({"ping": "pong!"})


async def describe_api(call: Call) -> Reply:
    from outpost.openapi import openapi_document  # only for /openapi.json

    return Reply(openapi_document())


async def metrics_text(call: Call) -> Reply:
    text, media_type = await metrics.render(call.runtime)
    return Reply(text, media_type=media_type)


async def start_service(call: Call) -> Reply:
    request = call.json(StartRequest)
    sid = ServiceId(call.hub, request.name, request.start_id)
    runtime = call.runtime
    options = runtime.settings.hub(call.hub)
    refused = refused_overrides(call.hub, request.misc, options.allowed_overrides, runtime.hooks.allow_override)
    if refused:
        raise errors.OverrideNotAllowed(f"This outpost does not allow overriding: {errors.shown(refused)}.")
    refused = refused_templates(request.misc)
    if refused:
        raise errors.TemplateNotAllowed(
            f"These options hold more than plain {{field}} placeholders (or too many): {errors.shown(refused)}."
        )
    screened = screen_env(request.env, options.allowed_env)
    if screened.refused:
        raise errors.EnvNotAllowed(
            f"This outpost does not pass these environment variables to servers: {errors.shown(screened.refused)}. "
            "Its administrator can allow them for this hub (hubOptions.<hub>.allowedEnv)."
        )
    request = request.model_copy(update={"env": screened.env})
    decision = await quota.admit(runtime, call.hub, request)
    certs = {"certs": request.certs, "internal_trust_bundles": request.internal_trust_bundles}
    created = await runtime.store.create(
        sid,
        user=request.user,
        user_id=request.env.get("JUPYTERHUB_USER_ID", ""),
        flavor=request.flavor,
        body=request.without_certs(),
        certs=certs if call.is_async and request.certs else None,
        limits=decision.limits,
        runtime_seconds=runtime_seconds(decision.flavor) if decision.flavor else None,
    )
    if not created.ok:
        raise quota.refused_by_store(decision, request.flavor or "", created.refusal, created.count)
    log.info("start requested for %s (%s)", sid, "async" if call.is_async else "sync")
    if call.is_async:
        try:
            await runtime.background.submit("start", sid)
        except errors.EventsUnavailable:
            await runtime.store.forget(sid)
            raise
        return Reply({"service": ""}, HTTPStatus.ACCEPTED)
    answer = await _start(runtime, sid, request.without_certs(), certs, announce_tunnel=False)
    return Reply({"service": answer})


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


async def _start(
    runtime: Runtime, sid: ServiceId, body: dict[str, Any], certs: dict[str, Any], *, announce_tunnel: bool
) -> str:
    """Run the backend for a PENDING record; the record is forgotten at once if the start fails."""
    claimed = runtime.store.transition(sid, Phase.STARTING, (Phase.PENDING,))
    if await _unless_unacknowledged(runtime, sid, claimed) != Phase.PENDING:
        raise errors.ServiceExists("the start of this service is already under way")
    env: dict[str, str] = body.get("env", {})
    about = str(sid)

    async def progress(percent: int, message: str) -> None:
        await runtime.hub.progress(env, about, percent, message)

    async def save_state(state: dict[str, Any]) -> None:
        await runtime.store.save_backend_state(sid, state)

    flavor = runtime.flavor_policy.flavors.get(body.get("user_options", {}).get("flavor") or "")
    spec = StartSpec(
        sid=sid,
        env=env,
        misc=body.get("misc", {}),
        certs=certs.get("certs", {}),
        trust_bundles=certs.get("internal_trust_bundles", {}),
        resources=dict(flavor.resources) if flavor else {},
    )
    await progress(10, "Start request received by the outpost")
    clock = time.perf_counter()
    try:
        started = await runtime.backend.start(spec, save_state, progress)
    except Exception as exc:
        metrics.START_SECONDS.labels("failed").observe(time.perf_counter() - clock)
        failure = exc if isinstance(exc, errors.SpawnFailed | errors.BadRequest) else _unexpected(exc, sid)
        await runtime.store.forget(sid)
        if announce_tunnel:  # an async start reports failure through the hub's event stream
            await runtime.hub.progress(env, about, 100, f"Start failed: {failure.message}", failed=True)
        await quota.send_flavor_update(runtime, sid, env)
        raise failure from None
    metrics.START_SECONDS.labels("started").observe(time.perf_counter() - clock)
    address = sanitized(runtime.hooks, sid.hub, sid.name, started.address)
    marked = runtime.store.mark_running(sid, _host_port(address), address)
    if await _unless_unacknowledged(runtime, sid, marked, started.state) not in (
        Phase.PENDING,
        Phase.STARTING,
    ):
        # A stop arrived while we were starting: it wins.
        await runtime.backend.stop(started.state)
        await runtime.store.forget(sid)
        raise errors.BackendError("the server was stopped while it was starting")
    await _remember(runtime, sid, started.state)
    await progress(100, "Server is ready")
    await quota.send_flavor_update(runtime, sid, env)
    if announce_tunnel and env.get("JUPYTERHUB_SETUPTUNNEL_URL") and env.get("JUPYTERHUB_API_TOKEN"):
        await runtime.hub.setup_tunnel(env["JUPYTERHUB_SETUPTUNNEL_URL"], env["JUPYTERHUB_API_TOKEN"], address, about)
    log.info("started %s", sid)
    return address


async def _unless_unacknowledged(
    runtime: Runtime, sid: ServiceId, write: Awaitable[Phase | None], state: dict[str, Any] | None = None
) -> Phase | None:
    """A start's phase change; if the Redis replicas do not acknowledge it, the start is undone (the server
    stopped, the record forgotten) before the hub hears 503, so no failover can leave half of it."""
    try:
        return await write
    except errors.ReplicasBehind:
        if state is not None:
            await runtime.backend.stop(state)
        await runtime.store.undo_start(sid)
        raise


async def _remember(runtime: Runtime, sid: ServiceId, state: dict[str, Any]) -> None:
    """The backend keeps the server's sealed identity, for the reconciler to re-adopt it should its record be
    lost; without it the server runs as well, and would be stopped as an orphan instead."""
    try:
        await runtime.backend.remember(state, await runtime.store.identity(sid))
    except OSError as exc:
        log.warning("the backend could not keep the identity of %s: %s", sid, exc)


def _host_port(address: str) -> str:
    return address.split("://", 1)[-1]


def _unexpected(exc: Exception, sid: ServiceId) -> errors.BackendError:
    log.error("backend failed for %s", sid, exc_info=(type(exc), exc, exc.__traceback__))
    return errors.BackendError(f"the outpost's backend failed ({type(exc).__name__}); see the outpost's log")


async def poll_service(call: Call) -> Reply:
    runtime = call.runtime
    sid = _service_id(call)
    view = await runtime.store.poll_record(sid)
    if view is None and await readopt(runtime, sid):
        view = await runtime.store.poll_record(sid)
    if view is None:
        raise errors.UnknownService()
    meta, state = view, view.state
    status: int | None = None
    if meta.phase in TERMINAL_PHASES:
        status = meta.exit_code or 0
    elif meta.phase == Phase.RUNNING and state is not None:
        status = await pod_status.cached_poll(runtime, meta, state)
    reply: dict[str, Any] = {"status": status}
    if call.query.get("collect_logs", "").lower() == "true":
        reply["logs"] = await runtime.backend.logs(state) if state is not None else []
    return Reply(reply)


async def stop_service(call: Call) -> Reply:
    runtime = call.runtime
    sid = _service_id(call)
    if await runtime.store.meta(sid) is None:
        await runtime.store.tombstone(sid)  # a server of it found running later is not re-adopted
        raise errors.UnknownService()
    if call.is_async:
        await runtime.store.transition(sid, Phase.STOPPING, (*ACTIVE_PHASES, *TERMINAL_PHASES))
        await runtime.background.submit("stop", sid)
        return Reply({}, HTTPStatus.ACCEPTED)
    logs = await _stop(runtime, sid, collect_logs=call.query.get("collect_logs", "").lower() == "true")
    return Reply({"logs": logs})


async def abandon(runtime: Runtime, sid: ServiceId, message: str) -> None:
    """Give up on a service: stop whatever runs, forget it, and tell the hub the spawn failed."""
    meta = await runtime.store.meta(sid)
    if meta is None:
        return
    body, _, _ = await runtime.store.secrets(sid)
    await stop_if_known(runtime, sid)
    await runtime.hub.progress(body.get("env", {}), str(sid), 100, message, failed=True)


async def stop_if_known(runtime: Runtime, sid: ServiceId) -> None:
    """A background stop, or the dev server's shutdown; a no-op for a service already gone."""
    if await runtime.store.meta(sid) is not None:
        await _stop(runtime, sid, collect_logs=False)


async def _stop(runtime: Runtime, sid: ServiceId, *, collect_logs: bool) -> list[str]:
    await runtime.store.transition(sid, Phase.STOPPING, (*ACTIVE_PHASES, *TERMINAL_PHASES))
    body, state, _ = await runtime.store.secrets(sid)  # undecryptable: 409, and the record is kept
    logs: list[str] = []
    if state is not None:
        logs = await runtime.backend.logs(state) if collect_logs else []
        with metrics.STOP_SECONDS.time():
            await runtime.backend.stop(state)
    await runtime.store.forget(sid)
    log.info("stopped %s", sid)
    await quota.send_flavor_update(runtime, sid, body.get("env", {}))
    return logs


async def list_services(call: Call) -> Reply:
    return Reply([meta.listing() for meta in await call.runtime.store.list_hub(call.hub)])


async def list_flavors(call: Call) -> Reply:
    return Reply(await quota.menu(call.runtime, call.hub))


async def user_flavors(call: Call) -> Reply:
    """The menu narrowed to one user; the body is that user's authentication dict."""
    return Reply(await quota.menu(call.runtime, call.hub, call.json_object()))

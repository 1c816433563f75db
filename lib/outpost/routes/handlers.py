"""One handler per route: the request read into plain arguments, the use case called, its result made a reply."""

from __future__ import annotations

from http import HTTPStatus

from outpost import upstream_config
from outpost.credits import hub_credits, user_credits
from outpost.lifecycle import quota
from outpost.lifecycle.poll import poll
from outpost.lifecycle.start import request_start
from outpost.lifecycle.stop import request_stop
from outpost.models import ServiceId, StartRequest
from outpost.routes import metrics
from outpost.routes.http import Call, Reply


def _service_id(call: Call) -> ServiceId:
    return ServiceId(call.hub, call.params["name"], call.params.get("start_id", "0"))


def _collect_logs(call: Call) -> bool:
    return call.query.get("collect_logs", "").lower() == "true"


async def ping(call: Call) -> Reply:
    return Reply({"ping": "pong!"})


async def describe_api(call: Call) -> Reply:
    from outpost.routes.openapi import openapi_document  # cold start: only /openapi.json builds the schema

    return Reply(openapi_document())


async def metrics_text(call: Call) -> Reply:
    text, media_type = await metrics.render(call.runtime)
    return Reply(text, media_type=media_type)


async def start_service(call: Call) -> Reply:
    address = await request_start(call.runtime, call.hub, call.json(StartRequest), in_background=call.is_async)
    if address is None:
        return Reply({"service": ""}, HTTPStatus.ACCEPTED)
    return Reply({"service": address})


async def poll_service(call: Call) -> Reply:
    polled = await poll(call.runtime, _service_id(call), collect_logs=_collect_logs(call))
    if polled.logs is None:
        return Reply({"status": polled.status})
    return Reply({"status": polled.status, "logs": polled.logs})


async def stop_service(call: Call) -> Reply:
    logs = await request_stop(
        call.runtime, _service_id(call), in_background=call.is_async, collect_logs=_collect_logs(call)
    )
    if logs is None:
        return Reply({}, HTTPStatus.ACCEPTED)
    return Reply({"logs": logs})


async def list_services(call: Call) -> Reply:
    return Reply([meta.listing() for meta in await call.runtime.store.list_hub(call.hub)])


async def list_flavors(call: Call) -> Reply:
    return Reply(await quota.menu(call.runtime, call.hub))


async def user_flavors(call: Call) -> Reply:
    """The menu narrowed to one user; the body is that user's authentication dict."""
    return Reply(await quota.menu(call.runtime, call.hub, call.json_object()))


async def list_credits(call: Call) -> Reply:
    """`GET /credits/` (upstream 2.1, for the JupyterHub Credit Service): this hub's credits."""
    return Reply(hub_credits(call.runtime.credit_policy, call.hub))


async def credits_of_user(call: Call) -> Reply:
    """`POST /usercredits`: one user's credits; the body is that user's authentication dict."""
    runtime = call.runtime
    auth = await upstream_config.user_authentication(runtime.upstream, call.json_object())
    return Reply(user_credits(runtime.credit_policy, call.hub, auth, runtime.hooks.normalise_authentication))

"""The API through the real functions-framework apps, with a real Redis and real server processes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import psutil
import pytest
import redis.asyncio as aioredis

from outpost.models import ServiceId
from outpost.runtime import get_runtime
from outpost.store.keys import ADDRESSES, key_index, key_record
from tests.conftest import TINY_ENV, HubReceiver, basic, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
A, B = basic("hubA"), basic("hubB")


async def start(api: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] = A) -> httpx.Response:
    return await api.post("/services", json=body, headers=headers)


async def test_ping_needs_no_credentials(api: httpx.AsyncClient) -> None:
    response = await api.get("/ping")
    assert response.status_code == 200
    assert response.json() == {"ping": "pong!"}


@pytest.mark.parametrize(
    "headers",
    [{}, basic("hubA", "wrong"), basic("nobody", "password-a"), {"Authorization": "Basic !!!"},
     {"Authorization": "Bearer x"}],
)  # fmt: skip
async def test_bad_credentials_get_401_with_challenge(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/services"), ("POST", "/services"), ("DELETE", "/services/x/1")):
        response = await api.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.json()["error"] == "Unauthorized"


async def test_sync_start_poll_list_stop(api: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    response = await start(api, start_body())
    assert response.status_code == 200, response.text
    address = response.json()["service"]
    assert address.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient() as direct:  # the server really runs, with the hub's env
        assert (await direct.get(f"{address}/user/alice/srv/api/status")).json()["user"] == "alice"

    poll = await api.get("/services/srv/1", headers=A)
    assert poll.status_code == 200 and poll.json() == {"status": None}
    listing = (await api.get("/services/", headers=A)).json()
    assert [(s["name"], s["start_id"], s["jupyterhub"]) for s in listing] == [("srv", "1", "hubA")]
    assert listing[0]["state_stored"] is True and listing[0]["start_pending"] is False

    stop = await api.delete("/services/srv/1", headers=A, params={"collect_logs": "true"})
    assert stop.status_code == 200
    assert any("tiny server for alice" in line for line in stop.json()["logs"])
    assert (await api.get("/services/srv/1", headers=A)).status_code == 404
    assert await redis.exists(key_record(ServiceId("hubA", "srv", "1"))) == 0
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as direct:
            await direct.get(address)


async def test_default_server_has_empty_name(api: httpx.AsyncClient) -> None:
    assert (await start(api, start_body(name=""))).status_code == 200
    assert (await api.get("/services//1", headers=A)).json() == {"status": None}
    assert (await api.delete("/services//1", headers=A)).status_code == 200
    assert (await api.get("/services//1", headers=A)).status_code == 404


async def test_start_id_defaults_to_zero_in_paths(api: httpx.AsyncClient) -> None:
    assert (await start(api, start_body(start_id="0"))).status_code == 200
    assert (await api.get("/services/srv", headers=A)).json() == {"status": None}
    assert (await api.delete("/services/srv", headers=A)).status_code == 200


async def test_poll_reports_exit_code_of_a_crashed_server(api: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    assert (await start(api, start_body())).status_code == 200
    record = key_record(ServiceId("hubA", "srv", "1"))
    running = await redis.hgetall(record)
    polled = (await api.get("/services/srv/1", headers=A, params={"collect_logs": "true"})).json()
    assert polled["status"] is None and polled["logs"]
    assert await redis.hgetall(record) == running  # a poll of a running server writes nothing
    assert list((await redis.hgetall(ADDRESSES)).values()) == [record.encode()]
    # Kill the server behind the outpost's back: poll must then answer its exit status.
    _, state = await (await get_runtime()).store.meta_and_state(ServiceId("hubA", "srv", "1")) or (None, None)
    assert state is not None
    for child in psutil.Process(state["pid"]).children(recursive=True):
        child.kill()
    for _ in range(200):
        status = (await api.get("/services/srv/1", headers=A)).json()["status"]
        if status is not None:
            break
        await asyncio.sleep(0.05)
    assert status == -9 or status == 137
    # The poll that saw it gone ended the record and withdrew its address, in one write; later polls write nothing.
    assert await redis.hgetall(ADDRESSES) == {}
    ended = await redis.hgetall(record)
    assert (ended[b"phase"], ended[b"exit_code"]) == (b"failed", str(status).encode())
    assert (await api.get("/services/srv/1", headers=A)).json() == {"status": status}
    assert await redis.hgetall(record) == ended
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200


async def test_server_that_exits_during_start_gets_419_and_is_forgotten(
    api: httpx.AsyncClient, make_settings: Any, redis: aioredis.Redis
) -> None:
    make_settings(hub_options=TINY_ENV)
    body = start_body()
    body["env"]["TINY_EXIT_CODE"] = "3"
    response = await start(api, body)
    assert response.status_code == 419
    error = response.json()
    assert set(error) == {"module", "class", "traceback", "args", "kwargs"}
    assert error["class"] == "BackendError" and "exited with code 3" in error["args"][0]
    assert error["module"] == "outpost.errors."  # the OutpostSpawner shows f"{module}{class}"
    assert "secret-api-token" not in response.text
    assert await redis.exists(key_record(ServiceId("hubA", "srv", "1"))) == 0
    assert await redis.scard(key_index("hubA")) == 0


async def test_hubs_never_see_each_others_services(api: httpx.AsyncClient) -> None:
    assert (await start(api, start_body(), A)).status_code == 200
    assert (await api.get("/services", headers=B)).json() == []
    assert (await api.get("/services/srv/1", headers=B)).status_code == 404
    assert (await api.delete("/services/srv/1", headers=B)).status_code == 404
    # The same name and start_id is a different service for another hub.
    assert (await start(api, start_body(), B)).status_code == 200
    assert (await api.get("/services/srv/1", headers=A)).json() == {"status": None}
    for headers in (A, B):
        assert (await api.delete("/services/srv/1", headers=headers)).status_code == 200


async def test_second_start_of_an_active_service_is_refused(api: httpx.AsyncClient) -> None:
    assert (await start(api, start_body())).status_code == 200
    again = await start(api, start_body())
    assert again.status_code == 409 and again.json()["error"] == "ServiceExists"
    assert (await api.get("/services/srv/1", headers=A)).json() == {"status": None}
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200


async def test_async_start_reports_progress_and_sets_up_the_tunnel(
    api: httpx.AsyncClient, hub_receiver: HubReceiver
) -> None:
    body = start_body(hub_url=hub_receiver.url)
    response = await start(api, body, {**A, "execution-type": "async"})
    assert response.status_code == 202 and response.json() == {"service": ""}
    tunnel_path = "/hub/api/users/setuptunnel/alice/srv"
    await hub_receiver.wait_for(lambda: bool(hub_receiver.of(tunnel_path)))
    [tunnel] = hub_receiver.of(tunnel_path)
    assert tunnel["authorization"] == "token secret-api-token"
    assert tunnel["json"]["service"].startswith("http://127.0.0.1:")
    events = [c["json"] for c in hub_receiver.of("/hub/api/users/progress/events/alice/srv")]
    assert events[-1]["progress"] == 100 and not any(e.get("failed") for e in events)
    assert (await api.get("/services/srv/1", headers=A)).json() == {"status": None}
    await until_tunnelled(ServiceId("hubA", "srv", "1"))  # the hub built a tunnel: recreated at restarts
    stop = await api.delete("/services/srv/1", headers={**A, "execution-type": "async"})
    assert stop.status_code == 202 and stop.json() == {}
    for _ in range(200):
        if (await api.get("/services/srv/1", headers=A)).status_code == 404:
            break
        await asyncio.sleep(0.05)
    assert (await api.get("/services/srv/1", headers=A)).status_code == 404


async def until_tunnelled(sid: ServiceId) -> None:
    store = (await get_runtime()).store
    for _ in range(200):
        meta = await store.meta(sid)
        if meta is not None and meta.tunnelled:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sid} was never noted as tunnelled")


async def test_a_start_the_hub_takes_no_tunnel_for_is_not_tunnelled(
    api: httpx.AsyncClient, hub_receiver: HubReceiver
) -> None:
    """A sync start (the hub connects to the answer) and an async start whose setup-tunnel call the hub refused
    are not noted as tunnelled: a restarted SSH daemon leaves them alone."""
    assert (await start(api, start_body(name="sync", hub_url=hub_receiver.url))).status_code == 200
    hub_receiver.status = 400
    assert (await start(api, start_body(hub_url=hub_receiver.url), {**A, "execution-type": "async"})).status_code == 202
    await hub_receiver.wait_for(lambda: bool(hub_receiver.of("/hub/api/users/setuptunnel/alice/srv")))
    runtime = await get_runtime()
    await asyncio.gather(*runtime.tasks)  # the background start, done after its setup-tunnel call
    store = runtime.store
    for name in ("sync", "srv"):
        meta = await store.meta(ServiceId("hubA", name, "1"))
        assert meta is not None and meta.phase == "running" and not meta.tunnelled, meta
        assert (await api.delete(f"/services/{name}/1", headers=A)).status_code == 200


async def test_async_start_failure_sends_failed_event_and_forgets(
    api: httpx.AsyncClient, make_settings: Any, hub_receiver: HubReceiver, redis: aioredis.Redis
) -> None:
    make_settings(hub_options=TINY_ENV)
    body = start_body(hub_url=hub_receiver.url)
    body["env"]["TINY_EXIT_CODE"] = "4"
    assert (await start(api, body, {**A, "execution-type": "async"})).status_code == 202
    events_path = "/hub/api/users/progress/events/alice/srv"
    await hub_receiver.wait_for(lambda: any(c["json"].get("failed") for c in hub_receiver.of(events_path)))
    failed = [c["json"] for c in hub_receiver.of(events_path) if c["json"].get("failed")]
    assert "exited with code 4" in failed[0]["message"]
    assert (await api.get("/services/srv/1", headers=A)).status_code == 404
    assert not hub_receiver.of("/hub/api/users/setuptunnel/alice/srv")
    assert await redis.scard(key_index("hubA")) == 0


async def test_hub_that_is_down_does_not_fail_the_start(api: httpx.AsyncClient) -> None:
    body = start_body(hub_url="http://127.0.0.1:9")  # nothing listens on the discard port
    response = await start(api, body)
    assert response.status_code == 200 and response.json()["service"]
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{not json", "InvalidJSON"),
        (b"\xff\xfe", "InvalidJSON"),
        (b"[]", "InvalidBody"),
        (b'"text"', "InvalidBody"),
        (b"{}", "InvalidBody"),
        (json.dumps({"name": 5}).encode(), "InvalidBody"),
        (json.dumps({"name": "a/b"}).encode(), "InvalidBody"),
        (json.dumps({"name": "x", "env": {"A": ["list"]}}).encode(), "InvalidBody"),
        (json.dumps({"name": "x", "user_options": {"start_id": {"a": 1}}}).encode(), "InvalidBody"),
        (json.dumps({"name": "x", "user_options": "nope"}).encode(), "InvalidBody"),
        (json.dumps({"name": "x", "certs": {"keyfile": 1}}).encode(), "InvalidBody"),
        (b"[" * 100000 + b"]" * 100000, "InvalidJSON"),
    ],
)
async def test_malformed_start_bodies_get_400(
    api: httpx.AsyncClient, redis: aioredis.Redis, content: bytes, error: str
) -> None:
    response = await api.post("/services", content=content, headers={**A, "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert "Traceback" not in response.text
    assert await redis.scard(key_index("hubA")) == 0


async def test_oversized_body_gets_413_and_stores_nothing(api: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    body = start_body(certs={"keyfile": "x" * (1024 * 1024)})
    response = await start(api, body)
    assert response.status_code == 413 and response.json()["error"] == "BodyTooLarge"

    async def chunks() -> Any:  # no Content-Length: the limit holds for streamed bodies too
        for _ in range(2048):
            yield b"x" * 1024

    streamed = await api.post("/services", content=chunks(), headers=A)
    assert streamed.status_code == 413
    assert await redis.scard(key_index("hubA")) == 0


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("path", ["/services//", "/services/srv/", "/services///", "/services/srv//"])
async def test_an_empty_start_id_is_an_unknown_service(api: httpx.AsyncClient, method: str, path: str) -> None:
    """What the hub asks after a stop: a JSON 404 it understands, never the listing."""
    for name in ("", "srv"):
        assert (await start(api, start_body(name=name))).status_code == 200
    response = await api.request(method, path, headers=A)
    assert response.status_code == 404, response.text
    assert response.json()["error"] in ("UnknownService", "UnknownRoute")
    for name in ("", "srv"):  # and nothing was stopped
        assert (await api.get(f"/services/{name}/1", headers=A)).json() == {"status": None}
        assert (await api.delete(f"/services/{name}/1", headers=A)).status_code == 200


async def test_the_listing_answers_with_and_without_a_trailing_slash(api: httpx.AsyncClient) -> None:
    assert (await start(api, start_body())).status_code == 200
    for path in ("/services", "/services/"):
        assert [s["name"] for s in (await api.get(path, headers=A)).json()] == ["srv"]
    assert (await api.get("/ping/")).json() == {"ping": "pong!"}
    assert (await api.delete("/services/srv/1/", headers=A)).status_code == 200


async def test_unknown_routes_and_methods(api: httpx.AsyncClient) -> None:
    assert (await api.get("/nothing", headers=A)).status_code == 404
    assert (await api.put("/services/x/1", headers=A)).status_code == 405
    # POST /services/... reaches the start function, which serves only POST /services.
    assert (await api.post("/services/x/1", headers=A, json={})).status_code == 404
    assert (await api.get("/services/x/1/extra", headers=A)).status_code == 404
    assert (await api.delete("/services/unknown/1", headers=A)).json()["error"] == "UnknownService"


async def test_undecryptable_record_gets_409_and_stays(
    api: httpx.AsyncClient, make_settings: Any, redis: aioredis.Redis
) -> None:
    assert (await start(api, start_body())).status_code == 200
    key = key_record(ServiceId("hubA", "srv", "1"))
    old_state = await redis.hget(key, "state")
    make_settings()  # a new key that cannot read what the old one wrote
    for response in (
        await api.get("/services/srv/1", headers=A),
        await api.delete("/services/srv/1", headers=A),
    ):
        assert response.status_code == 409 and response.json()["error"] == "UndecryptableRecord"
    assert await redis.hget(key, "state") == old_state
    listing = await api.get("/services", headers=A)
    assert [s["name"] for s in listing.json()] == ["srv"]


async def test_redis_down_gets_503(api: httpx.AsyncClient, make_settings: Any, tmp_path: Any) -> None:
    make_settings(redis_url=f"unix://{tmp_path}/nothing.sock", redis_retries=1)  # the answer, not the retries
    for response in (await api.get("/services", headers=A), await start(api, start_body())):
        assert response.status_code == 503 and response.json()["error"] == "StoreUnavailable"


async def test_nothing_secret_is_stored_in_plain_text(api: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    body = start_body(certs={"keyfile": "PRIVATE-KEY-PEM"})
    assert (await start(api, body)).status_code == 200
    dump = b"".join(
        [v for k in await redis.keys("*") if await redis.type(k) == b"hash" for v in (await redis.hgetall(k)).values()]
    )
    assert b"secret-api-token" not in dump and b"PRIVATE-KEY-PEM" not in dump
    assert (await api.delete("/services/srv/1", headers=A)).status_code == 200

"""A start that fails leaves nothing behind, and explains itself: the 419's message, the failed progress
event and the console end with the server's last output (bounded, printable, without the values of its
environment); the output file is kept."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.exceptions
from traitlets.config import Config

from outpost.backends.local import LocalBackend
from outpost.backends.output import TAIL_CHARS, TAIL_LINES
from outpost.flavors import FlavorLimits
from outpost.lifecycle.start import run_background_start
from outpost.models import Phase, ServiceId
from outpost.runtime import get_runtime
from tests.conftest import RUN_AS_OWN_USER, HubReceiver, basic, start_body

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")
ROOT_ADVICE = "Running as root is not recommended. Use --allow-root to bypass."
# Forty lines of noise (only the last ones may be shown), the token the hub passed, a coloured word and a
# carriage return that would rewrite a terminal line, then what jupyter_server prints as root, and exit 1.
SCRIPT = (
    'for i in $(seq 40); do echo "noise line $i"; done; '
    'echo "token=$JUPYTERHUB_API_TOKEN"; '
    "printf 'colour \\033[31mred\\033[0m\\r and \\007bell\\n'; "
    f'echo "{ROOT_ADVICE}"; exit 1'
)


@pytest.fixture
def failing_config(tmp_path: Path) -> Path:
    path = tmp_path / "failing_config.py"
    path.write_text(f"c.LocalProcessBackend.cmd = ['sh', '-c', {SCRIPT!r}]\n" + RUN_AS_OWN_USER)
    return path


def assert_explained(message: str) -> None:
    assert message.startswith("the server exited with code 1 before it was ready. Its last output:\n"), message
    tail = message.split("Its last output:\n", 1)[1].splitlines()
    assert tail[-1] == ROOT_ADVICE
    assert tail[-3:-1] == ["colour red", " and bell"]  # the escapes and the bell removed, \r ends a line
    assert len(tail) <= TAIL_LINES and len("\n".join(tail)) <= TAIL_CHARS
    assert tail[0].startswith("noise line ") and "noise line 1\n" not in message  # the end, not the start
    assert "secret-api-token" not in message and "token=" not in message
    assert not any(char in message for char in "\x1b\r\x07")


async def test_sync_start_419_ends_with_the_output_which_is_kept(
    api: httpx.AsyncClient, make_settings: Any, failing_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(backend_config=failing_config)
    caplog.set_level(logging.INFO)
    response = await api.post("/services", json=start_body(), headers=A)
    assert response.status_code == 419, response.text
    assert response.json()["class"] == "BackendError"
    assert_explained(response.json()["args"][0])
    assert "secret-api-token" not in response.text
    shown = [r.getMessage() for r in caplog.records if ROOT_ADVICE in r.getMessage()]
    assert len(shown) == 1 and shown[0].startswith("start of hubA/srv/1 failed: ")  # once, escaped
    assert "\n" not in shown[0] and ROOT_ADVICE + '"' in shown[0]
    [kept] = (settings.data_dir / "servers" / "failed").glob("*/output.log")
    assert ROOT_ADVICE in kept.read_text() and not (kept.parent / "server.json").exists()


async def test_async_start_sends_the_output_as_the_failed_event(
    api: httpx.AsyncClient, make_settings: Any, failing_config: Path, hub_receiver: HubReceiver
) -> None:
    make_settings(backend_config=failing_config)
    response = await api.post(
        "/services", json=start_body(hub_url=hub_receiver.url), headers={**A, "execution-type": "async"}
    )
    assert response.status_code == 202
    events_path = "/hub/api/users/progress/events/alice/srv"
    await hub_receiver.wait_for(lambda: any(c["json"].get("failed") for c in hub_receiver.of(events_path)))
    [failed] = [c["json"] for c in hub_receiver.of(events_path) if c["json"].get("failed")]
    assert failed["message"].startswith("Start failed: ")
    assert_explained(failed["message"].removeprefix("Start failed: "))


async def test_redis_gone_while_marking_running_stops_the_server_and_forgets_the_start(
    api: httpx.AsyncClient, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failover during the write that makes a start RUNNING: whether it was written is unknown, so the
    start is undone before the hub hears 503; no server runs on without a record."""
    settings = make_settings()
    runtime = await get_runtime()

    async def primary_gone(*args: Any, **kwargs: Any) -> None:
        raise redis.exceptions.ConnectionError("the primary went away")

    monkeypatch.setattr(runtime.store, "mark_running", primary_gone)
    response = await api.post("/services", json=start_body(name="cut"), headers=A)
    assert response.status_code == 503 and response.json()["error"] == "StoreUnavailable"
    monkeypatch.undo()
    assert await LocalBackend(Config(), settings.data_dir).running() == []
    assert (await api.get("/services/cut/1", headers=A)).status_code == 404
    assert await runtime.store.usage("hubA", "alice", "") == (0, 0, 0)


def _failing_at_starting(transition: Any, *, made: bool) -> Any:
    """The store's `transition`, whose write to STARTING fails as when the primary goes away and the client's
    retries run out: `made`, Redis made the write and its answer was lost; else Redis never saw it."""

    async def failing(sid: ServiceId, to: Phase, allowed_from: Any, **fields: Any) -> Phase | None:
        if to != Phase.STARTING:
            return await transition(sid, to, allowed_from, **fields)
        if made:
            await transition(sid, to, allowed_from, **fields)
        raise redis.exceptions.ConnectionError("the primary went away")

    return failing


async def test_redis_gone_while_claiming_a_sync_start_forgets_the_start(
    api: httpx.AsyncClient, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub hears 503 and never hears of this start again (it stops what it was refused): no record is left
    to be listed or to hold a slot until the reconciler's deadline."""
    make_settings()
    runtime = await get_runtime()
    monkeypatch.setattr(runtime.store, "transition", _failing_at_starting(runtime.store.transition, made=True))
    response = await api.post("/services", json=start_body(name="cut"), headers=A)
    assert response.status_code == 503 and response.json()["error"] == "StoreUnavailable"
    monkeypatch.undo()
    assert (await api.get("/services", headers=A)).json() == []
    assert await runtime.store.usage("hubA", "alice", "") == (0, 0, 0)


async def test_redis_gone_before_claiming_a_background_start_keeps_it_pending_for_the_next_delivery(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_settings()
    runtime = await get_runtime()
    sid = ServiceId("hubA", "later", "1")
    created = await runtime.store.create(
        sid, user="alice", user_id="1", flavor=None, body={}, certs=None, limits=FlavorLimits()
    )
    assert created.ok
    monkeypatch.setattr(runtime.store, "transition", _failing_at_starting(runtime.store.transition, made=False))
    with pytest.raises(redis.exceptions.ConnectionError):  # the event is delivered again
        await run_background_start(runtime, sid)
    monkeypatch.undo()
    meta = await runtime.store.meta(sid)
    assert meta is not None and meta.phase == Phase.PENDING
    await runtime.store.forget(sid)

"""What the fuzzers found, one regression test each, so the fixes stay fixed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import psutil
import pytest
from cryptography.fernet import Fernet
from traitlets.config import Config

from outpost import errors
from outpost.backends.base import StartSpec
from outpost.backends.local import LocalBackend
from outpost.crypto import Crypt
from outpost.lifecycle.stop import stop_if_known
from outpost.models import ServiceId
from outpost.routes.openapi import openapi_document
from outpost.settings import load_settings
from tests.conftest import OWN_USER, TINY_SERVER
from tests.fuzz.harness import MAX_BODY_BYTES, Fuzz, Seed, basic

JSON = {"Content-Type": "application/json"}


def fuzz_body(name: str, start_id: str, **env: str) -> bytes:
    body = Seed("hubA", name, start_id, "regression-user").body()
    body["env"].update(env)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "env",
    [
        {"JUPYTERHUB_EVENTS_URL": "http://[::1"},
        {"JUPYTERHUB_EVENTS_URL": "http://hub.invalid/\x7f"},
        {"JUPYTERHUB_EVENTS_URL": "http://hub.invalid/events", "JUPYTERHUB_API_TOKEN": "tök"},
    ],
    ids=["invalid-port", "control-character", "non-ascii-token"],
)
@pytest.mark.asyncio(loop_scope="session")
async def test_a_hub_url_httpx_rejects_does_not_fail_the_start(fuzz: Fuzz, env: dict[str, str]) -> None:
    try:
        response = await fuzz.client.post(
            "/services", content=fuzz_body("hub-url", "1", **env), headers={**JSON, "Authorization": _basic()}
        )
        # As when the hub is down: the start succeeds, the hub is simply not told.
        assert response.status_code == 200, response.text
    finally:
        await _forget(fuzz, ServiceId("hubA", "hub-url", "1"))


@pytest.mark.parametrize(
    ("name", "start_id"),
    [
        pytest.param("plain", "", id="empty-start-id"),
        pytest.param("plain", "\t", id="tab"),
        pytest.param("plain", "a\nb", id="newline"),
        pytest.param("plain", "\r", id="cr"),
        pytest.param("plain", "a?b", id="question-mark"),
        pytest.param("plain", "..", id="dot-dot"),
        pytest.param("a?b", "1", id="name-question-mark"),
        pytest.param("a#b", "1", id="name-hash"),
        pytest.param("a\\b", "1", id="name-backslash"),
        pytest.param(".", "1", id="name-dot"),
        pytest.param("..", "1", id="name-dot-dot"),
    ],
)
@pytest.mark.asyncio(loop_scope="session")
async def test_every_accepted_service_is_reachable(fuzz: Fuzz, name: str, start_id: str) -> None:
    """Either the start is refused (400), or the hub can poll and stop what it started."""
    sid = ServiceId("hubA", name, start_id)
    path = f"/services/{quote(name, safe='')}/{quote(start_id, safe='')}"
    headers = {"Authorization": _basic()}
    try:
        response = await fuzz.client.post("/services", content=fuzz_body(name, start_id), headers={**JSON, **headers})
        if response.status_code == 400:
            return
        assert response.status_code == 200, response.text
        poll = await fuzz.client.get(path, headers=headers)
        assert poll.status_code == 200 and poll.json() == {"status": None}, poll.text
        assert (await fuzz.client.delete(path, headers=headers)).status_code == 200
    finally:
        await _forget(fuzz, sid)


@pytest.mark.parametrize("user", ["shared-user", "../../escaped-by-fuzz", "<absolute>"])
@pytest.mark.asyncio(loop_scope="session")
async def test_a_servers_home_belongs_to_one_hub_and_stays_in_the_data_dir(fuzz: Fuzz, user: str) -> None:
    if user == "<absolute>":  # next to the data dir, so a failing run litters only its own tmp dir
        user = str(fuzz.data_dir.parent / "escaped-by-fuzz")
    homes = {}
    try:
        for hub in ("hubA", "hubB"):
            body = Seed(hub, "home", "1", user).body()
            response = await fuzz.client.post(
                "/services", content=json.dumps(body).encode(), headers={**JSON, "Authorization": basic(hub)}
            )
            if response.status_code == 400:  # refusing such a user name is a fix too
                return
            assert response.status_code == 200, response.text
            _, state = await fuzz.runtime.store.meta_and_state(ServiceId(hub, "home", "1")) or (None, None)
            assert state is not None
            homes[hub] = Path(psutil.Process(state["pid"]).cwd()).resolve()
        servers = (fuzz.data_dir / "servers").resolve()
        assert all(home.is_relative_to(servers) for home in homes.values()), homes
        assert homes["hubA"] != homes["hubB"], homes
    finally:
        for hub in ("hubA", "hubB"):
            await _forget(fuzz, ServiceId(hub, "home", "1"))


@pytest.mark.parametrize("path", ["/services", "/userflavors"])
@pytest.mark.asyncio(loop_scope="session")
async def test_a_huge_integer_is_invalid_json(fuzz: Fuzz, path: str) -> None:
    content = b'{"name": "x", "n": ' + b"9" * 5000 + b"}"
    response = await fuzz.client.post(path, content=content, headers={**JSON, "Authorization": _basic()})
    assert response.status_code == 400 and response.json()["error"] == "InvalidJSON", response.text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"content-length", b"\xb2")], 400),  # "²": str.isdigit() said yes, int() raised (500)
        ([(b"content-length", b"9" * 5000)], 413),  # more digits than int() takes (500)
        ([(b"authorization", b"Basic QQ\xe9==")], 401),  # non-ASCII: base64 raised ValueError (500)
        ([(b"authorization", b"Basic eA=="), (b"authorization", b"Basic eA==")], 401),
    ],
    ids=["superscript-length", "long-length", "non-ascii-auth", "two-auth"],
)
@pytest.mark.asyncio(loop_scope="session")
async def test_headers_a_server_may_pass_through_never_raise(
    fuzz: Fuzz, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    """Straight into the ASGI app, as a server that passes these bytes on would hand them over."""
    auth = [] if any(k == b"authorization" for k, _ in headers) else [(b"authorization", _basic().encode())]
    response = await fuzz._asgi("POST", "/services", [*auth, *headers], b"{}", "hubA")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"


# Names the env allow-list passes, so the values reach the OS.
@pytest.mark.parametrize("env", [{"JUPYTERHUB_X": "a\x00b"}, {"JUPYTERHUB_A=B": "1"}], ids=["nul", "equals"])
@pytest.mark.asyncio(loop_scope="session")
async def test_an_environment_the_os_refuses_is_a_bad_request(fuzz: Fuzz, env: dict[str, str]) -> None:
    sid = ServiceId("hubA", "bad-env", "1")
    try:
        response = await fuzz.client.post(
            "/services", content=fuzz_body("bad-env", "1", **env), headers={**JSON, "Authorization": _basic()}
        )
        assert response.status_code == 400 and response.json()["error"] == "InvalidBody", response.text
    finally:
        await _forget(fuzz, sid)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_failure_after_the_spawn_stops_the_server(tmp_path: Path) -> None:
    config = Config()
    config.LocalProcessBackend.cmd = [sys.executable, str(TINY_SERVER)]
    config.LocalProcessBackend.run_as = OWN_USER
    backend = LocalBackend(config, tmp_path)
    saved: list[dict[str, Any]] = []

    async def save_state(state: dict[str, Any]) -> None:
        saved.append(state)

    async def progress(percent: int, message: str) -> None:
        if percent == 50:
            raise RuntimeError("the hub callback blew up")

    spec = StartSpec(ServiceId("hubA", "spawned", "1"), {"JUPYTERHUB_SERVICE_PREFIX": "/"})
    with pytest.raises(RuntimeError):
        await backend.start(spec, save_state, progress)
    try:
        assert await backend.poll(saved[0]) is not None, "the server outlived its failed start"
    finally:
        await backend.stop(saved[0])


@pytest.mark.asyncio(loop_scope="session")
async def test_openapi_document_matches_what_the_routes_answer(fuzz: Fuzz) -> None:
    document = openapi_document()
    gaps = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            schemas = {p["name"]: p["schema"] for p in operation.get("parameters", []) if p["in"] == "path"}
            # The last segment of a path must not collapse: '' is stripped, '.' and '..' are resolved.
            last = schemas.get("start_id") or schemas.get("name")
            for value in ("", ".", "..") if last else ():
                if jsonschema.Draft202012Validator(last).is_valid(value):
                    gaps.append(f"{method} {path}: allows {value!r} as its last segment")
            if "name" in schemas and jsonschema.Draft202012Validator(schemas["name"]).is_valid(".."):
                gaps.append(f"{method} {path}: allows the name '..'")
            url = path.replace("{name}", "x").replace("{start_id}", "1")
            response = await fuzz.send(
                method.upper(), url, hub="hubA", content=b"x" * (MAX_BODY_BYTES + 1), bookkeeping=True
            )
            if str(response.status_code) not in operation["responses"]:
                gaps.append(f"{method} {path}: {response.status_code} is not documented")
            if operation.get("security") != [] and "429" not in operation["responses"]:
                gaps.append(f"{method} {path}: the 429 of the login rate limit is not documented")
    assert not gaps, gaps


def test_a_settings_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_bytes(b"flavors: {}\n\xff\xfe")
    with pytest.raises(errors.ConfigurationError):
        load_settings(path, crypt_key=Fernet.generate_key().decode())


@pytest.mark.parametrize("line", ["_envFile: 5", "_secretsDir: 5", "_envPrefix: 5", "_secretsDir: /etc"])
def test_a_settings_file_cannot_steer_the_settings_loader(tmp_path: Path, line: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(line + "\n")
    with pytest.raises(errors.ConfigurationError):
        load_settings(path, crypt_key=Fernet.generate_key().decode())


def test_rotating_a_non_ascii_token_is_undecryptable() -> None:
    with pytest.raises(errors.UndecryptableRecord):
        Crypt([Fernet.generate_key().decode()]).rotate("é")


# --- helpers ------------------------------------------------------------------------------------


def _basic() -> str:
    return basic("hubA")


async def _forget(fuzz: Fuzz, sid: ServiceId) -> None:
    """Stop and forget a service whatever its id: the API may not be able to reach it."""
    await fuzz.settle()
    await stop_if_known(fuzz.runtime, sid)
    await fuzz.runtime.store.forget(sid)

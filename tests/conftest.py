"""Shared fixtures: a real Redis, settings built directly, the functions served by their real loader."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import uvicorn
from cryptography.fernet import Fernet
from slurm_single_node import SingleNodeSlurm, binaries_missing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from traitlets.config import Config

from outpost.backends.local import LocalBackend
from outpost.cli.devserver import build_router, functions_dir
from outpost.cli.embedded_redis import EmbeddedRedis
from outpost.cli.envfile import admin_environment
from outpost.runtime import close_runtime, use_settings
from outpost.settings import Settings

TINY_SERVER = Path(__file__).parent / "support" / "tiny_singleuser.py"
# Servers of these tests run as the test's own user, stated explicitly: as root, an outpost with no
# `run_as` starts no server (tests/security covers servers run as another user).
OWN_USER = pwd.getpwuid(os.geteuid()).pw_name
RUN_AS_OWN_USER = f"c.LocalProcessBackend.run_as = {OWN_USER!r}\n"
HUBS = {"hubA": "password-a", "hubB": "password-b"}
METRICS_TOKEN = "metrics-token-of-the-tests"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}
# For tests about something else that steer the tiny server through its TINY_* variables (exit, delay).
TINY_ENV = {hub: {"allowedEnv": ["TINY_*"]} for hub in HUBS}


@pytest.fixture(autouse=True)
def isolate_environment() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def slurm() -> Iterator[SingleNodeSlurm]:
    """A real single-node Slurm (tools/slurm_single_node.py: munged, slurmctld, slurmd, slurmrestd with JWT) for
    the session, shared by tests/slurm and tests/e2e. Its directory holds the tiny server where a job's account
    can read it (`tiny_singleuser.py`) and `jobs/`, a directory every job user may write."""
    missing = binaries_missing()
    if missing:
        pytest.skip(f"Slurm is not installed ({' '.join(missing)}): sh tools/install_slurm.sh")
    if os.geteuid() != 0:
        pytest.skip("the single-node Slurm runs its daemons as root")
    root = Path("/tmp") / f"outpost-slurm-{os.getpid()}"  # short: munge's socket path has a length limit
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o755)
    cluster = SingleNodeSlurm(root)
    cluster.start()
    shutil.copy(TINY_SERVER, root / "tiny_singleuser.py")  # where the job's account can read it
    (root / "tiny_singleuser.py").chmod(0o644)
    (root / "jobs").mkdir(mode=0o1777)
    (root / "jobs").chmod(0o1777)
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server.url


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def backend_config(tmp_path: Path) -> Path:
    """An `outpost_config.py` that runs the tiny stand-in server."""
    path = tmp_path / "outpost_config.py"
    path.write_text(
        f"c.LocalProcessBackend.cmd = [{sys.executable!r}, {str(TINY_SERVER)!r}]\n"
        "c.LocalProcessBackend.start_timeout = 20.0\n"
        "c.LocalProcessBackend.stop_timeout = 2.0\n" + RUN_AS_OWN_USER
    )
    return path


@pytest_asyncio.fixture
async def make_settings(
    redis_url: str, redis: aioredis.Redis, tmp_path: Path, backend_config: Path
) -> AsyncIterator[Callable[..., Settings]]:
    """Build Settings directly (never through the environment) and serve with them."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "crypt_key": Fernet.generate_key().decode(),
            "hub_usernames": ";".join(HUBS),
            "hub_passwords": ";".join(HUBS.values()),
            "redis_url": redis_url,
            "data_dir": tmp_path / "data",
            "backend_config": backend_config,
            "hub_retries": 2,
            "hub_timeout_seconds": 2.0,
            "metrics_token": METRICS_TOKEN,
            **overrides,
        }
        settings = Settings(**values)
        use_settings(settings)
        return settings

    yield make
    await close_runtime()
    use_settings(None)
    # No test leaves a server behind, whatever happened to its record.
    backend = LocalBackend(Config(), tmp_path / "data")
    for _, state in await backend.running():
        await backend.stop(state)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """The OUTPOST_* environment that gives a separate function process these settings."""
    env = admin_environment(settings)
    if settings.hub_options:
        options = {hub: o.model_dump(by_alias=True, exclude_none=True) for hub, o in settings.hub_options.items()}
        env["OUTPOST_HUB_OPTIONS"] = json.dumps(options, default=lambda secret: secret.get_secret_value())
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def function_process(
    function: str, target: str, settings: Settings, stderr: Any = subprocess.DEVNULL
) -> AsyncIterator[tuple[subprocess.Popen[bytes], httpx.AsyncClient]]:
    """One function served in its own process as its container serves it (`outpost serve-function`)."""
    port = free_port()
    source = functions_dir() / function / "main.py"
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "outpost"), "serve-function", "--target", target, "--source", str(source),
         "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **settings_env(settings)}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await client.get("/metrics", headers=SCRAPER)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise AssertionError(f"{target} did not come up") from None
                    await asyncio.sleep(0.05)
            yield process, client
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def basic(hub: str, password: str | None = None) -> dict[str, str]:
    token = base64.b64encode(f"{hub}:{password if password is not None else HUBS[hub]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="session")
def router() -> Any:
    return build_router()


@pytest_asyncio.fixture
async def api(router: Any, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The three functions behind one router, as `outpost dev` and the Knative route serve them."""
    transport = httpx.ASGITransport(app=router)
    async with httpx.AsyncClient(transport=transport, base_url="http://outpost", timeout=30) as client:
        yield client


@dataclass
class HubReceiver:
    """A real HTTP server standing in for the hub's callback APIs; records what it receives."""

    url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 204
    # Seconds each answer takes (a real hub's setup-tunnel API runs ssh), and when each call began and ended.
    delay_seconds: float = 0.0
    events: list[str] = field(default_factory=list)

    def of(self, path: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["path"] == path]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; calls: {self.calls}")
            await asyncio.sleep(0.02)


@pytest_asyncio.fixture
async def hub_receiver() -> AsyncIterator[HubReceiver]:
    receiver = HubReceiver()

    async def record(request: Request) -> Response:
        receiver.events.append(f"begin {request.url.path}")
        receiver.calls.append(
            {
                "path": request.url.path,
                "authorization": request.headers.get("authorization"),
                "json": await request.json(),
            }
        )
        if receiver.delay_seconds:
            await asyncio.sleep(receiver.delay_seconds)
        receiver.events.append(f"end {request.url.path}")
        return Response(status_code=receiver.status)

    app = Starlette(routes=[Route("/{path:path}", record, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="error"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}"
    yield receiver
    server.should_exit = True
    await task


def start_body(
    name: str = "srv", start_id: str = "1", user: str = "alice", hub_url: str = "", **extra: Any
) -> dict[str, Any]:
    """A start body shaped like the OutpostSpawner's."""
    env = {
        "JUPYTERHUB_API_TOKEN": "secret-api-token",
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_USER_ID": "7",
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/{user}/{name}/",
        "JUPYTERHUB_API_URL": f"{hub_url}/hub/api",
    }
    if hub_url:
        env["JUPYTERHUB_EVENTS_URL"] = f"{hub_url}/hub/api/users/progress/events/{user}/{name}"
        env["JUPYTERHUB_SETUPTUNNEL_URL"] = f"{hub_url}/hub/api/users/setuptunnel/{user}/{name}"
    body: dict[str, Any] = {
        "name": name,
        "env": env,
        "user_options": {"start_id": start_id},
        "misc": {"port": 0, "ip": "127.0.0.1", "internal_ssl": False, "services_enabled": True},
        "certs": {},
        "internal_trust_bundles": {},
    }
    body.update(extra)
    return body

"""The processes a benchmark runs against: an embedded Redis and functions served by the real CLI.

Every function runs as `outpost serve-function --target T --source S --port P` (the image's command:
functions-framework's server with the API's limits) in its own process group, configured only
through `OUTPOST_*` environment variables, exactly as a Knative Service runs it. This process also
builds a `Runtime` from the same settings, to write records through the Store API and to clean up
the servers the local backend started.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

from outpost.cli.embedded_redis import EmbeddedRedis
from outpost.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"
EMPTY_SOURCE = Path(__file__).resolve().parent / "empty" / "main.py"
TINY_SERVER = ROOT / "tests" / "support" / "tiny_singleuser.py"
# Servers run as this process's own user, explicitly: as root, the outpost needs `run_as` to start any.
RUN_AS_OWN_USER = f"c.LocalProcessBackend.run_as = {pwd.getpwuid(os.geteuid()).pw_name!r}\n"
CLI = [str(Path(sys.executable).with_name("outpost")), "serve-function"]

# target name -> source file, as knative/outpost-*.yaml sets FUNCTION_TARGET / FUNCTION_SOURCE
TARGETS = {
    "empty": ("empty_function", EMPTY_SOURCE),
    "libraries": ("libraries_function", EMPTY_SOURCE.with_name("libraries.py")),
    "floor": ("redis_get_function", EMPTY_SOURCE.with_name("redis_get.py")),
    "start": ("start_service", FUNCTIONS / "start" / "main.py"),
    "poll": ("poll_service", FUNCTIONS / "poll" / "main.py"),
    "stop": ("stop_service", FUNCTIONS / "stop" / "main.py"),
}
HUBS = {f"hub{i}": f"password-{i}-{'x' * 16}" for i in range(10)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic_auth(hub: str) -> str:
    return "Basic " + base64.b64encode(f"{hub}:{HUBS[hub]}".encode()).decode()


@dataclass
class Stack:
    """Redis, a backend configuration running the ready-at-once tiny server, and the settings."""

    workdir: Path
    crypt_key: str = field(default_factory=lambda: Fernet.generate_key().decode())
    redis: EmbeddedRedis | None = None
    events_sink: str | None = None

    def start(self) -> Stack:
        self.redis = EmbeddedRedis(self.workdir / "redis", appendonly=False).start()
        self.backend_config.write_text(
            f"c.LocalProcessBackend.cmd = [{sys.executable!r}, {str(TINY_SERVER)!r}]\n"
            "c.LocalProcessBackend.start_timeout = 20.0\n"
            "c.LocalProcessBackend.stop_timeout = 2.0\n" + RUN_AS_OWN_USER
        )
        return self

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()

    @property
    def backend_config(self) -> Path:
        return self.workdir / "outpost_config.py"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def redis_url(self, db: int = 0) -> str:
        assert self.redis is not None
        return f"{self.redis.url}?db={db}"

    def env(self, db: int = 0, backend_config: Path | None = None) -> dict[str, str]:
        """The environment of a function process: the deployment's OUTPOST_* variables only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTPOST_", "REDIS_URL"))}
        env.update(
            OUTPOST_CRYPT_KEY=self.crypt_key,
            OUTPOST_HUB_USERNAMES=";".join(HUBS),
            OUTPOST_HUB_PASSWORDS=";".join(HUBS.values()),
            OUTPOST_REDIS_URL=self.redis_url(db),
            OUTPOST_BACKEND_CONFIG=str(backend_config or self.backend_config),
            OUTPOST_DATA_DIR=str(self.data_dir),
            PYTHONUNBUFFERED="1",
        )
        if self.events_sink:
            env["OUTPOST_EVENTS_SINK"] = self.events_sink
        return env

    def settings(self, db: int = 0, backend_config: Path | None = None) -> Settings:
        """The same settings the function processes load, for this process's own Runtime."""
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.env(db, backend_config))
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)


class FunctionProcess:
    """One function served as its image serves it (`outpost serve-function`), in its own process group."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        target, source = TARGETS[name]
        self.args = [*CLI, "--target", target, "--source", str(source), "--host", "127.0.0.1"]
        self.args += ["--port", str(self.port)]
        self._env = env
        self._log = log_dir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0

    def spawn(self) -> FunctionProcess:
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as log:
            self.spawned_at = time.perf_counter()
            self.proc = subprocess.Popen(
                self.args,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def worker_pids(self) -> list[int]:
        """The gunicorn worker(s): children of the master we started."""
        assert self.proc is not None
        import psutil

        return [child.pid for child in psutil.Process(self.proc.pid).children(recursive=True)]

    def wait_listening(self, timeout: float = 60) -> float:
        """Seconds from spawn to the first HTTP answer of any status (the worker is serving)."""
        return wait_answer(self, "GET", "/", {}, None, timeout, any_status=True)

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_answer(
    fn: FunctionProcess,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    timeout: float,
    *,
    any_status: bool = False,
) -> float:
    """Retry one request until it is answered (2xx, or any status); seconds since the spawn."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(fn.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
                return time.perf_counter() - fn.spawned_at
        except urllib.error.HTTPError as exc:
            if any_status:
                exc.read()
                return time.perf_counter() - fn.spawned_at
            raise RuntimeError(f"{fn.name} answered {exc.code} to {method} {path}: {exc.read()[:300]!r}") from None
        except (OSError, urllib.error.URLError):
            assert fn.proc is not None
            if fn.proc.poll() is not None:
                raise RuntimeError(f"{fn.name} exited with {fn.proc.returncode}:\n{fn.log_tail()}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{fn.name} did not answer within {timeout}s:\n{fn.log_tail()}") from None
            time.sleep(0.005)


@contextlib.contextmanager
def serving(name: str, env: dict[str, str], log_dir: Path) -> Iterator[FunctionProcess]:
    """A running function process, answering HTTP, stopped on exit."""
    fn = FunctionProcess(name, env, log_dir).spawn()
    try:
        fn.wait_listening()
        yield fn
    finally:
        fn.kill()


_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, with the time since the run began."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def start_body(name: str, start_id: str = "1", user: str = "alice") -> dict[str, object]:
    """A start request shaped like the OutpostSpawner's (no hub callback URLs: nothing to call back)."""
    return {
        "name": name,
        "env": {
            "JUPYTERHUB_API_TOKEN": "secret-api-token-" + "x" * 24,
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_USER_ID": "7",
            "JUPYTERHUB_SERVICE_PREFIX": f"/user/{user}/{name}/",
            "JUPYTERHUB_API_URL": "http://hub.invalid:8081/hub/api",
            "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}-{name}",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/user/{user}/{name}/oauth_callback",
        },
        "user_options": {"start_id": start_id},
        "misc": {"port": 0, "ip": "127.0.0.1", "internal_ssl": False, "services_enabled": True},
        "certs": {},
        "internal_trust_bundles": {},
    }

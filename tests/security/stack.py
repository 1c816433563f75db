"""The stack an attacking hub faces, each part a real process: `outpost dev` serving two hubs (each
with its own password and SSH key), local notebook servers, and a recorder of the HTTP calls the
outpost makes (a hub's callback APIs, or a victim on the outpost's network)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import redis
import yaml
from cryptography.fernet import Fernet

from outpost.backends.local import default_home_root
from tests.conftest import TINY_SERVER
from tests.e2e.processes import VENV_BIN, Proc, base_env, free_port, wait_until
from tests.sshd.helpers import OpenSSH

HUB_NAMES = ("hubA", "hubB")
# The override list the README recommends, given to hubA; hubB keeps the default policy.
RECOMMENDED_OVERRIDES = [
    "dns_name_template", "pod_name_template", "internal_ssl", "port", "ip", "services_enabled", "extra_labels",
]  # fmt: skip


def server_python() -> str:
    """An interpreter an unprivileged user can run: as root, servers must not run as root, and the
    venv's interpreter may sit in root's home."""
    if os.geteuid() == 0 and Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    return sys.executable


@dataclass(frozen=True)
class Tenant:
    """One hub: its credential name and password, and the private key its SSH client uses."""

    name: str
    password: str
    key: Path
    public_key: str

    @property
    def auth(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.name}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


@dataclass
class Recorder:
    """A real HTTP server that answers 204 to every request and remembers it."""

    server: ThreadingHTTPServer
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [call["path"] for call in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_recorder() -> Recorder:
    calls: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            calls.append({"path": self.path, "headers": dict(self.headers), "body": body.decode(errors="replace")})
            self.send_response(204)
            self.end_headers()

        do_GET = do_POST  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Recorder(server, calls)


def make_tenants(workdir: Path) -> dict[str, Tenant]:
    tenants = {}
    for name in HUB_NAMES:
        key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
        path = workdir / f"{name}_key"
        key.write_private_key(path)
        path.chmod(0o600)
        tenants[name] = Tenant(name, secrets.token_urlsafe(16), path, key.export_public_key().decode().strip())
    return tenants


@dataclass
class Stack:
    proc: Proc
    tmp: Path
    api_port: int
    ssh_port: int
    data_dir: Path
    tenants: dict[str, Tenant]
    recorder: Recorder

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def api(self, hub: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.tenants[hub].auth, timeout=60)

    def start(self, hub: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        with self.api(hub) as api:
            return api.post("/services", json=body, headers=headers)

    def stop(self, hub: str, name: str, start_id: str = "1") -> httpx.Response:
        with self.api(hub) as api:
            return api.delete(f"/services/{name}/{start_id}")

    @property
    def metrics_token(self) -> str:
        """The token `outpost dev` generated for /metrics (no OUTPOST_METRICS_TOKEN given)."""
        return (self.data_dir / "metrics_token").read_text().strip()

    def metrics(self) -> str:
        """GET /metrics as the scraper: with the metrics token, never a hub's password."""
        answer = httpx.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.text

    def redis(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.data_dir / "redis" / "redis.sock"))

    def record_keys(self) -> set[str]:
        """Every stored service record, of every hub."""
        with self.redis() as client:
            return {key.decode() for key in client.scan_iter(match="outpost:hub:*:svc:*") if b":certs" not in key}

    def address_index(self) -> dict[str, str]:
        with self.redis() as client:
            return {k.decode(): v.decode() for k, v in client.hgetall("outpost:addresses").items()}

    def log(self) -> str:
        return self.proc.text()

    def function_env(self, workdir: Path) -> dict[str, str]:
        """The environment of a function process serving these hubs from this stack's Redis."""
        env = base_env(f"function-{secrets.token_hex(4)}")
        env.update(
            OUTPOST_CRYPT_KEY=Fernet.generate_key().decode(),
            OUTPOST_HUB_USERNAMES=";".join(self.tenants),
            OUTPOST_HUB_PASSWORDS=";".join(t.password for t in self.tenants.values()),
            OUTPOST_REDIS_URL=f"unix://{self.data_dir / 'redis' / 'redis.sock'}",
            OUTPOST_DATA_DIR=str(workdir / "data"),
        )
        return env

    def ssh(self, hub: str, workdir: Path) -> OpenSSH:
        """The real OpenSSH client with this hub's key, driven as forwardbasespawner drives it."""
        workdir.mkdir(parents=True, exist_ok=True)
        return OpenSSH(self.ssh_port, self.tenants[hub].key, workdir)

    def nothing_created(self) -> bool:
        """No record, no address, and no server the local backend started (it marks each before it may answer)."""
        markers = list((self.data_dir / "servers").glob("*/server.json"))
        return self.record_keys() == set() and self.address_index() == {} and markers == []

    def stop_all(self) -> None:
        """Stop every service of every hub, so a test leaves nothing behind for the next."""
        for hub in self.tenants:
            with self.api(hub) as api:
                for service in api.get("/services").json():
                    api.delete(f"/services/{service['name']}/{service['start_id']}")


def start_body(
    name: str = "srv", start_id: str = "1", user: str = "alice", *, callbacks: str = "", **extra: Any
) -> dict[str, Any]:
    """A start body shaped like the OutpostSpawner's defaults (its misc included)."""
    env = {
        "JUPYTERHUB_API_TOKEN": "token-" + secrets.token_hex(8),
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_USER_ID": "7",
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/{user}/{name}/",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api",
    }
    if callbacks:
        env["JUPYTERHUB_EVENTS_URL"] = f"{callbacks}/hub/api/users/progress/events/{user}/{name}"
        env["JUPYTERHUB_SETUPTUNNEL_URL"] = f"{callbacks}/hub/api/users/setuptunnel/{user}/{name}"
    body: dict[str, Any] = {
        "name": name,
        "env": env,
        "user_options": {"start_id": start_id},
        "misc": {
            "dns_name_template": "{name}.{namespace}.svc.cluster.local",
            "pod_name_template": "jupyter-{username}--{servername}",
            "internal_ssl": False,
            "port": 8888,
            "ip": "0.0.0.0",
            "services_enabled": True,
            "extra_labels": {},
        },
        "certs": {},
        "internal_trust_bundles": {},
    }
    body.update(extra)
    return body


def default_values(tenants: dict[str, Tenant]) -> dict[str, Any]:
    """hubA with the README's recommended override list, each hub's key limited to that hub."""
    return {
        "sshPublicKeys": [{"hub": t.name, "key": t.public_key} for t in tenants.values()],
        "hubOptions": {"hubA": {"allowedOverrides": RECOMMENDED_OVERRIDES}},
    }


def launch(
    tmp: Path,
    marker: str,
    *,
    values: dict[str, Any] | None = None,
    backend_lines: str = "",
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    max_descriptors: int | None = None,
) -> Stack:
    """`outpost dev` with two hubs, tiny notebook servers and the given YAML values, waited for;
    `max_descriptors`: its RLIMIT_NOFILE (set by `prlimit`, which then runs it under the same pid)."""
    tmp.mkdir(parents=True, exist_ok=True)
    tenants = make_tenants(tmp)
    recorder = start_recorder()
    data_dir = tmp / "outpost-data"
    api_port, ssh_port = free_port(), free_port()
    config = tmp / "values.yaml"
    config.write_text(yaml.safe_dump({**default_values(tenants), **(values or {})}))
    backend = tmp / "outpost_config.py"
    backend.write_text(
        f"c.LocalProcessBackend.cmd = [{server_python()!r}, {str(TINY_SERVER)!r}]\n"
        "c.LocalProcessBackend.start_timeout = 20.0\n"
        "c.LocalProcessBackend.stop_timeout = 2.0\n" + backend_lines
    )
    process_env = base_env(marker)
    process_env.update(
        OUTPOST_CRYPT_KEY=Fernet.generate_key().decode(),
        OUTPOST_HUB_USERNAMES=";".join(tenants),
        OUTPOST_HUB_PASSWORDS=";".join(t.password for t in tenants.values()),
        OUTPOST_BACKEND_CONFIG=str(backend),
        **(env or {}),
    )
    limit = ["prlimit", f"--nofile={max_descriptors}:{max_descriptors}", "--"] if max_descriptors else []
    cmd = [
        *limit, str(VENV_BIN / "outpost"), "dev", "--api-host", "127.0.0.1", "--api-port", str(api_port),
        "--ssh-port", str(ssh_port), "--data-dir", str(data_dir), "--config", str(config), *(args or []),
    ]  # fmt: skip
    proc = Proc.spawn("outpost dev", cmd, process_env, tmp / "outpost-dev.log", cwd=tmp, owned=[data_dir])
    stack = Stack(proc, tmp, api_port, ssh_port, data_dir, tenants, recorder)

    def pong() -> bool:
        proc.check_alive()
        return bool(httpx.get(f"{stack.url}/ping", timeout=2).json() == {"ping": "pong!"})

    try:
        wait_until(f"outpost dev on {stack.url}/ping", pong, timeout=30)
    except AssertionError:
        proc.stop(signal.SIGKILL)
        recorder.close()
        raise
    return stack


def shut_down(stack: Stack) -> None:
    """SIGINT, as Ctrl-C: every server stopped, nothing left running, no traceback."""
    stack.recorder.close()
    code = stack.proc.stop(signal.SIGINT)
    shutil.rmtree(default_home_root(stack.data_dir), ignore_errors=True)  # homes of servers run as another uid
    assert code in (0, 130, -signal.SIGINT), stack.proc.tail()
    assert "Traceback" not in stack.proc.text(), stack.proc.tail()


def decoded(response: httpx.Response) -> Any:
    try:
        return response.json()
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON ({response.status_code}): {response.text[:300]}") from None


@dataclass
class Evidence:
    """A file an attack would write if it ran: the test asserts it never appears."""

    path: Path

    def exists(self) -> bool:
        return self.path.exists()

    def cleanup(self) -> None:
        if self.path.is_dir():
            shutil.rmtree(self.path)
        else:
            self.path.unlink(missing_ok=True)


def evidence(tmp: Path, name: str) -> Iterator[Evidence]:
    found = Evidence(tmp / name)
    found.cleanup()
    yield found
    found.cleanup()

"""The stack under test, each part a real process: `outpost dev`, the SSH daemon (`python -m sshd`),
and JupyterHub with the unmodified OutpostSpawner behind configurable-http-proxy."""

from __future__ import annotations

import base64
import dataclasses
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import httpx
import yaml

from outpost.settings import DEFAULT_OVERRIDES
from tests.e2e.processes import MARKER, VENV_BIN, Proc, base_env, free_port, listening, progress, wait_until

REPO = Path(__file__).resolve().parents[2]
CHP_LOCAL = REPO / ".ci" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
INSTALL_CHP = REPO / "tools" / "install_chp.sh"
HUB_CREDENTIAL = "e2ehub"
# The default override policy (what the OutpostSpawner sends), plus cmd for the servers broken on purpose.
OVERRIDES_WITH_CMD = [*DEFAULT_OVERRIDES, "cmd"]


def outpost_values(tmp: Path, overrides: Sequence[str] = OVERRIDES_WITH_CMD, **values: object) -> Path:
    """A YAML file for `outpost dev --config`: the hub may also override cmd (or `overrides`), and the given values."""
    path = tmp / "outpost-values.yaml"
    options = {"hubOptions": {HUB_CREDENTIAL: {"allowedOverrides": list(overrides)}}}
    path.write_text(yaml.safe_dump({**options, **values}))
    return path


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def chp_command() -> str:
    """configurable-http-proxy from .ci/node (installed on first use) or from PATH."""
    if CHP_LOCAL.is_file():
        return str(CHP_LOCAL)
    on_path = shutil.which("configurable-http-proxy")
    if on_path:
        return on_path
    if not shutil.which("npm"):
        raise RuntimeError("configurable-http-proxy is missing and npm is not installed: install Node.js >= 20")
    progress("installing configurable-http-proxy into .ci/node (tools/install_chp.sh)")
    out = subprocess.run(["sh", str(INSTALL_CHP)], check=True, capture_output=True, text=True, timeout=300)
    return out.stdout.strip().splitlines()[-1]


# --- outpost dev ------------------------------------------------------------------------------


@dataclass
class Outpost:
    """A running `outpost dev`: its API, the hub credential it accepts and its data directory."""

    proc: Proc
    api_port: int
    ssh_port: int
    data_dir: Path
    config: Path | None
    crypt_key: str
    password: str
    env: dict[str, str] = field(repr=False, default_factory=dict)
    base_path: str = ""  # OUTPOST_BASE_PATH: the hub and the tests use the API under it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}{self.base_path}"

    @property
    def request_url(self) -> str:
        return f"{self.url}/services"

    @property
    def auth(self) -> dict[str, str]:
        return basic_auth(HUB_CREDENTIAL, self.password)

    @property
    def redis_url(self) -> str:
        return f"unix://{self.data_dir / 'redis' / 'redis.sock'}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth, timeout=30)

    def services(self) -> list[dict[str, object]]:
        with self.client() as api:
            response = api.get("/services")
        assert response.status_code == 200, response.text
        listing: list[dict[str, object]] = response.json()
        return listing


def outpost_home(tmp: Path) -> Path:
    """HOME for the outpost process, out of the real home. Its servers each get their own (one per hub
    and user); as root, `outpost dev` runs the venv's jupyterhub-singleuser (which no unprivileged uid can run)
    as root with --allow-root, so no Jupyter configuration is needed for that here."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def outpost_command(data_dir: Path, api_port: int, ssh_port: int, config: Path | None = None) -> list[str]:
    """`outpost dev` (the installed console script) on loopback."""
    cmd = [
        str(VENV_BIN / "outpost"), "dev", "--api-host", "127.0.0.1", "--api-port", str(api_port),
        "--ssh-port", str(ssh_port), "--data-dir", str(data_dir),
    ]  # fmt: skip
    return cmd + (["--config", str(config)] if config is not None else [])


def start_outpost(
    tmp: Path, marker: str, *, config: Path | None = None, ssh_port: int | None = None,
    extra_args: Sequence[str] = (), generated_key: bool = False, upstream_env: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Outpost:  # fmt: skip
    """`outpost dev` on free loopback ports, waited for on /ping. With `generated_key`, the crypt key is
    the one `outpost dev` makes and keeps in its data directory (as for a user who sets nothing).
    `upstream_env`: the hub credentials as upstream's pods get them (`usernames`, `passwords`)."""
    from cryptography.fernet import Fernet

    data_dir = tmp / "outpost-data"
    api_port, ssh_port = free_port(), ssh_port or free_port()
    crypt_key, password = Fernet.generate_key().decode(), secrets.token_urlsafe(16)
    env = base_env(marker)
    if upstream_env:
        env.update(usernames=HUB_CREDENTIAL, passwords=password)
    else:
        env.update(OUTPOST_HUB_USERNAMES=HUB_CREDENTIAL, OUTPOST_HUB_PASSWORDS=password)
    env.update(extra_env or {})
    if not generated_key:
        env["OUTPOST_CRYPT_KEY"] = crypt_key
    env["HOME"] = str(outpost_home(tmp))
    cmd = [*outpost_command(data_dir, api_port, ssh_port, config), *extra_args]
    proc = _spawn_outpost(tmp, cmd, env, api_port, data_dir)
    outpost = Outpost(proc, api_port, ssh_port, data_dir, config, crypt_key, password, env)
    outpost.base_path = env.get("OUTPOST_BASE_PATH", "").rstrip("/")
    return outpost


def restart_outpost(tmp: Path, previous: Outpost, extra_args: Sequence[str] = ()) -> Outpost:
    """`outpost dev` again on the data directory of `previous` (which has exited), with its secrets."""
    api_port, ssh_port = free_port(), free_port()
    cmd = [*outpost_command(previous.data_dir, api_port, ssh_port, previous.config), *extra_args]
    proc = _spawn_outpost(tmp, cmd, previous.env, api_port, previous.data_dir)
    return dataclasses.replace(previous, proc=proc, api_port=api_port, ssh_port=ssh_port)


def restart_keeping_servers(tmp: Path, outpost: Outpost, log_name: str, extra_args: Sequence[str] = ()) -> None:
    """SIGTERM `outpost dev` (started with --keep-servers), which leaves its servers running, then start it
    again with --keep-servers on the same ports and data directory, as the hub's configuration knows them.
    `outpost.proc` becomes the new process, logging to `log_name`."""
    code = outpost.proc.popen.send_signal(signal.SIGTERM) or outpost.proc.popen.wait(timeout=30)
    assert code == 0 and "(--keep-servers)" in outpost.proc.text(), outpost.proc.tail()
    command = outpost_command(outpost.data_dir, outpost.api_port, outpost.ssh_port, outpost.config)
    cmd = [*command, "--keep-servers", *extra_args]
    outpost.proc = _spawn_outpost(tmp, cmd, outpost.env, outpost.api_port, outpost.data_dir, log_name)


def _spawn_outpost(
    tmp: Path, cmd: list[str], env: dict[str, str], api_port: int, data_dir: Path, log_name: str = "outpost-dev.log"
) -> Proc:
    proc = Proc.spawn("outpost dev", cmd, env, tmp / log_name, cwd=tmp, owned=[data_dir])
    url = f"http://127.0.0.1:{api_port}"

    def pong() -> bool:
        proc.check_alive()
        return bool(httpx.get(f"{url}/ping", timeout=2).json() == {"ping": "pong!"})

    try:
        wait_until(f"outpost dev on {url}/ping", pong, timeout=30)
    except AssertionError:
        proc.stop(signal.SIGKILL)
        raise
    return proc


def stop_outpost(outpost: Outpost) -> None:
    """Ctrl-C on `outpost dev` alone: it must stop every server it started, then exit cleanly."""
    code = outpost.proc.stop(signal.SIGINT)
    text = outpost.proc.text()
    assert code == 0, f"outpost dev exited with {code}:\n{outpost.proc.tail()}"
    assert "Traceback" not in text, f"outpost dev logged a traceback:\n{outpost.proc.tail()}"


# --- the hub's SSH client files ----------------------------------------------------------------

# forwardbasespawner runs ssh with `preexec_fn=os.setuid(1000)`; as root that switch succeeds, so
# the key, the known_hosts file and the control socket must belong to uid 1000.
SSH_UID = 1000


class SSHClientFiles:
    """The hub's key, known_hosts and ControlPath directory (a short path: a control socket's path must fit
    in a Unix socket address, 108 bytes)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = directory / "id_ed25519"
        self.known_hosts = directory / "known_hosts"
        self.control_path = directory / "cm-%C"  # one master per (host, port, user)
        generated = asyncssh.generate_private_key("ssh-ed25519", comment="e2e-hub")
        generated.write_private_key(self.key)
        self.key.chmod(0o600)
        self.public = generated.export_public_key().decode().strip()

    def masters(self) -> list[Path]:
        return sorted(self.dir.glob("cm-*"))

    def exit_masters(self) -> None:
        """`ssh -O exit` every control master the hub left (it never closes them itself)."""
        for socket_path in self.masters():
            progress(f"closing the hub's ssh control master {socket_path.name}")
            subprocess.run(
                ["ssh", f"-oControlPath={socket_path}", "-O", "exit", "jhuboutpost@127.0.0.1"],
                capture_output=True, timeout=10, check=False,
            )  # fmt: skip

    def forward_options(self) -> dict[str, str]:
        """The hub's `ssh_forward_options`: this directory's control sockets and known_hosts."""
        return {"ControlPath": str(self.control_path), "UserKnownHostsFile": str(self.known_hosts)}


# --- the SSH daemon as its own process (as the chart runs it) ---------------------------------


def start_sshd(outpost: Outpost, tmp: Path, port: int, *, log_name: str = "sshd.log") -> Proc:
    """`python -m sshd` on `port`, with outpost dev's Redis, keys and hub credentials."""
    env = dict(outpost.env)
    env.update(
        OUTPOST_REDIS_URL=outpost.redis_url,
        OUTPOST_SSH_LISTEN_HOST="127.0.0.1",
        OUTPOST_SSH_PORT=str(port),
        OUTPOST_SSH_HOST_KEY=str(outpost.data_dir / "ssh_host_key"),
    )
    kept_key = outpost.data_dir / "crypt_key"  # the key `outpost dev` made, unless one was given
    if "OUTPOST_CRYPT_KEY" not in env and kept_key.exists():
        env["OUTPOST_CRYPT_KEY"] = kept_key.read_text().strip()
    cmd = [sys.executable, "-m", "sshd"]
    if outpost.config is not None:
        cmd += ["--config", str(outpost.config)]
    env[MARKER] = f"{outpost.proc.marker}-sshd"
    proc = Proc.spawn("sshd", cmd, env, tmp / log_name, cwd=tmp)

    def up() -> bool:
        proc.check_alive()
        return listening(port)

    try:
        wait_until(f"the SSH daemon on 127.0.0.1:{port}", up, timeout=20)
    except AssertionError:
        proc.stop(signal.SIGKILL)
        raise
    return proc


# --- JupyterHub with the real OutpostSpawner ----------------------------------------------------

HUB_SCOPES = ["admin:users", "admin:servers", "admin:server_state", "access:servers"]

HUB_CONFIG = """\
# Generated by tests/e2e: a real JupyterHub whose OutpostSpawner talks to `outpost dev`.
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{workdir}/jupyterhub_cookie_secret"
c.JupyterHub.log_level = "DEBUG"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.cleanup_servers = True
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = "{workdir}/jupyterhub-proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "e2e", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "e2e", "scopes": {scopes!r}, "services": ["e2e"]}}]

# What `outpost dev` printed, pasted as a newcomer would:
{snippet}
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 30
c.OutpostSpawner.custom_poll_interval = 2000  # ms: poll the outpost often during the test

def _misc(spawner, user_options):
    # A server named "broken..." gets a command that exits at once: the start must fail cleanly.
    if spawner.name.startswith("broken"):
        return {{"cmd": ["sh", "-c", "echo broken on purpose; exit 3"]}}
    return {{}}

c.OutpostSpawner.custom_misc = _misc
"""


@dataclass
class Hub:
    proc: Proc
    url: str  # the proxy's public URL
    token: str
    workdir: Path
    outpost: Outpost

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/hub/api", headers=self.auth, timeout=60)

    def server(self, user: str, name: str = "") -> dict[str, object] | None:
        with self.api() as api:
            response = api.get(f"/users/{user}")
        assert response.status_code == 200, response.text
        servers: dict[str, dict[str, object]] = response.json()["servers"]
        return servers.get(name)

    def events(self, user: str, name: str = "") -> list[dict[str, object]]:
        path = f"/users/progress/events/{user}" + (f"/{name}" if name else "")
        with self.api() as api:
            response = api.get(path)
        assert response.status_code == 200, response.text
        events: list[dict[str, object]] = response.json()["events"]
        return events

    def create_user(self, user: str) -> None:
        with self.api() as api:
            response = api.post(f"/users/{user}")
        assert response.status_code == 201, response.text

    def request_start(self, user: str, name: str = "") -> httpx.Response:
        path = f"/users/{user}/servers/{name}" if name else f"/users/{user}/server"
        progress(f"hub API: start server {user}/{name}")
        with self.api() as api:
            return api.post(path, json={})

    def start(self, user: str, name: str = "", timeout: float = 60.0) -> float:
        """Start a server through the hub's API; return the seconds until the hub reports it ready."""
        began = time.monotonic()
        response = self.request_start(user, name)
        assert response.status_code in (201, 202), response.text

        def ready() -> bool:
            self.proc.check_alive()
            server = self.server(user, name)
            return bool(server and server["ready"])

        wait_until(f"server {user}/{name} ready in the hub", ready, timeout=timeout, interval=0.05)
        return time.monotonic() - began

    def stop(self, user: str, name: str = "", timeout: float = 60.0) -> None:
        path = f"/users/{user}/servers/{name}" if name else f"/users/{user}/server"
        progress(f"hub API: stop server {user}/{name}")
        with self.api() as api:
            response = api.delete(path)
        assert response.status_code in (202, 204), response.text
        wait_until(f"server {user}/{name} gone from the hub", lambda: self.server(user, name) is None, timeout)

    def proxied(self, user: str, name: str, path: str) -> httpx.Response:
        """A request through the hub's proxy to the user's server, with the test's API token."""
        prefix = f"/user/{user}/{name}/" if name else f"/user/{user}/"
        return httpx.get(f"{self.url}{prefix}{path}", headers=self.auth, timeout=30, follow_redirects=False)


def printed_snippet(outpost: Outpost) -> str:
    """The `jupyterhub_config.py` lines `outpost dev` printed at start-up."""
    text = outpost.proc.text()
    start = text.index("# --- jupyterhub_config.py")
    return text[start : text.index("# -----", start + 10)]


def tunnelled_hub_config(ssh_files: SSHClientFiles, ssh_port: int) -> str:
    """Hub lines for the snippet's SSH variant, hub and servers on this machine: the hub forwards a local port
    to each server through the daemon on `ssh_port`."""
    return f"""
c.OutpostSpawner.ssh_during_startup = True
c.OutpostSpawner.svc_name_template = "127.0.0.1"
c.OutpostSpawner.svc_create = True
c.OutpostSpawner.ssh_custom_svc = lambda spawner, port_forward_info: ("127.0.0.1", spawner.port)
c.OutpostSpawner.ssh_custom_svc_remove = lambda spawner, port_forward_info: None
c.OutpostSpawner.custom_misc_disable_default = True
c.OutpostSpawner.ssh_node = "127.0.0.1"
c.OutpostSpawner.ssh_port = {ssh_port}
c.OutpostSpawner.ssh_username = "jhuboutpost"
c.OutpostSpawner.ssh_key = {str(ssh_files.key)!r}
c.OutpostSpawner.ssh_forward_options = {ssh_files.forward_options()!r}
"""


def snippet_forward_lock(outpost: Outpost) -> str:
    """The printed snippet's "one forward at a time" lines (commented there, in its SSH variant), uncommented."""
    lines = printed_snippet(outpost).splitlines()
    first = lines.index("# import asyncio")
    last = next(i for i, line in enumerate(lines) if line.startswith("# c.OutpostSpawner.ssh_custom_forward"))
    return "\n".join(line.removeprefix("# ") for line in lines[first : last + 1]) + "\n"


def start_hub(tmp: Path, marker: str, outpost: Outpost, chp: str, extra_config: str = "") -> Hub:
    """`python -m jupyterhub` with a generated config in its own directory, waited for via the proxy."""
    workdir = tmp / "hub"
    workdir.mkdir()
    proxy_port = free_port()
    token = secrets.token_hex(32)
    config = HUB_CONFIG.format(
        proxy_port=proxy_port, hub_port=free_port(), proxy_api_port=free_port(), workdir=workdir, chp=chp,
        token=token, scopes=HUB_SCOPES, snippet=printed_snippet(outpost),
    )  # fmt: skip
    (workdir / "jupyterhub_config.py").write_text(config + extra_config)
    env = base_env(f"{marker}-hub")
    cmd = [sys.executable, "-m", "jupyterhub", "-f", str(workdir / "jupyterhub_config.py")]
    proc = Proc.spawn("jupyterhub", cmd, env, tmp / "jupyterhub.log", cwd=workdir, owned=[workdir])
    hub = Hub(proc, f"http://127.0.0.1:{proxy_port}", token, workdir, outpost)

    def up() -> bool:
        proc.check_alive()
        return httpx.get(f"{hub.url}/hub/api/", timeout=2).status_code == 200

    try:
        wait_until(f"JupyterHub behind its proxy on {hub.url}", up, timeout=60)
    except AssertionError:
        proc.stop(signal.SIGKILL)
        raise
    return hub


def stop_hub(hub: Hub) -> None:
    """Ctrl-C on the hub: it stops its servers (through the outpost) and its proxy, then exits."""
    code = hub.proc.stop(signal.SIGINT, timeout=60)
    assert code in (0, 130, -signal.SIGINT), f"jupyterhub exited with {code}:\n{hub.proc.tail()}"

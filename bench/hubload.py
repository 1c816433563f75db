"""Six users at once through the tunnel: real `jupyterhub-singleuser` servers with ipykernel, started by a
real JupyterHub, reached directly, through our daemon and through a stock OpenSSH sshd, in one run.

    python -m bench.hubload [--quick] [--users 6] [--seconds 5] [--rounds 3] [--json results.json]

Each user runs, as fast as answers come, code in its kernel over the kernel's websocket
(`execute_request` until `execute_reply`), `GET api/status` and `GET api/contents`, in turn, with the
hub service's API token, at its server's address as the hub's proxy reaches it (the local end of the
hub's forward). Two patterns:

- kept-alive: one HTTP connection and one websocket per user, reused (one channel each);
- new-channel: every HTTP request says `Connection: close` and every execution opens its own websocket
  (a new SSH channel each), as when the proxy passes a client's `Connection: close` on, for every
  websocket and every new connection of the proxy's pool.

Modes and patterns alternate in rounds (`--seconds` each), so a noisy neighbour hurts them alike; the
table gives operations per second (median of the rounds), p50 and p99 (all rounds' operations), and the
ratios ours/OpenSSH. Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.tunnel import (
    SSHD,
    Client,
    child_env,
    client_key,
    free_port,
    percentile,
    process,
    run_and_print,
    start_openssh,
    start_ours,
)

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SCOPES = ["admin:users", "admin:servers", "access:servers", "list:users", "read:users"]
PATTERNS = ("kept-alive", "new-channel")
CODE = "sum(range(1000))"


@dataclass(frozen=True)
class Sizes:
    users: int
    seconds: float
    rounds: int


FULL = Sizes(6, 5.0, 3)
QUICK = Sizes(6, 2.0, 2)


# --- the hub and its servers --------------------------------------------------------------------

HUB_CONFIG = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
c.JupyterHub.cleanup_servers = True
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = "{workdir}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{workdir}/home/{{username}}"
c.Spawner.ip = "127.0.0.1"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = {args!r}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "bench", "scopes": {scopes!r}, "services": ["bench"]}}]
"""


@dataclass(frozen=True)
class Hub:
    url: str
    api_url: str  # the proxy's API, where each server's address is
    token: str
    proxy_token: str


def chp_command() -> str:
    """configurable-http-proxy as the end-to-end tests find it (installed into .ci/node on first use)."""
    from tests.e2e.harness import chp_command as find

    return find()


async def start_hub(stack: AsyncExitStack, workdir: Path) -> Hub:
    hub_dir = workdir / "hub"
    (hub_dir / "home").mkdir(parents=True)
    proxy_port, proxy_api_port = free_port(), free_port()
    token, proxy_token = secrets.token_hex(32), secrets.token_hex(32)
    config = HUB_CONFIG.format(
        proxy_port=proxy_port, hub_port=free_port(), proxy_api_port=proxy_api_port, workdir=hub_dir,
        chp=chp_command(), proxy_token=proxy_token, singleuser=str(VENV_BIN / "jupyterhub-singleuser"),
        args=["--allow-root"] if os.geteuid() == 0 else [], token=token, scopes=SCOPES,
    )  # fmt: skip
    (hub_dir / "jupyterhub_config.py").write_text(config)
    env = child_env()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    log = stack.enter_context((workdir / "jupyterhub.log").open("wb"))
    args = (sys.executable, "-m", "jupyterhub", "-f", str(hub_dir / "jupyterhub_config.py"))
    proc = await stack.enter_async_context(
        process(*args, env=env, cwd=hub_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log, stop=signal.SIGINT)
    )
    hub = Hub(f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{proxy_api_port}", token, proxy_token)
    async with httpx.AsyncClient(timeout=5) as http:
        deadline = time.monotonic() + 90
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"jupyterhub exited with {proc.returncode}: see {workdir / 'jupyterhub.log'}")
            try:
                if (await http.get(f"{hub.url}/hub/api/")).status_code == 200:
                    return hub
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("JupyterHub did not come up in 90 s")
            await asyncio.sleep(0.2)


async def start_servers(hub: Hub, users: list[str]) -> dict[str, int]:
    """Each user's server started through the hub's API; their ports, from the proxy's routes."""
    headers = {"Authorization": f"token {hub.token}"}
    async with httpx.AsyncClient(base_url=f"{hub.url}/hub/api", headers=headers, timeout=120) as api:
        for user in users:
            assert (await api.post(f"/users/{user}")).status_code in (201, 409)
            assert (await api.post(f"/users/{user}/server")).status_code in (201, 202)
        deadline = time.monotonic() + 180
        while not all([(await api.get(f"/users/{user}")).json()["servers"].get("", {}).get("ready") for user in users]):
            if time.monotonic() > deadline:
                raise RuntimeError("the servers were not ready in 180 s")
            await asyncio.sleep(0.3)
    async with httpx.AsyncClient(timeout=10) as http:
        routes = (
            await http.get(f"{hub.api_url}/api/routes", headers={"Authorization": f"token {hub.proxy_token}"})
        ).json()
    return {user: int(routes[f"/user/{user}"]["target"].rsplit(":", 1)[1]) for user in users}


async def start_kernel(port: int, user: str, token: str) -> str:
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/user/{user}/api/kernels", headers={"Authorization": f"token {token}"}, json={}
        )
        response.raise_for_status()
        return str(response.json()["id"])


# --- one user's load ----------------------------------------------------------------------------


def execute_request(session: str) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    message = {
        "header": {"msg_id": msg_id, "username": "bench", "session": session, "msg_type": "execute_request",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": CODE, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }  # fmt: skip
    return msg_id, json.dumps(message)


async def execute(ws: aiohttp.ClientWebSocketResponse, session: str) -> None:
    msg_id, text = execute_request(session)
    await ws.send_str(text)
    while True:
        reply = await ws.receive(timeout=30)
        if reply.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"kernel websocket: {reply.type.name}")
        message = json.loads(reply.data)
        if message.get("parent_header", {}).get("msg_id") == msg_id and message["msg_type"] == "execute_reply":
            if message["content"]["status"] != "ok":
                raise RuntimeError(f"execution failed: {message['content']}")
            return


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"execute": [], "status": [], "contents": []})
    errors: int = 0

    def ops(self) -> int:
        return sum(map(len, self.latencies.values()))


async def user_load(port: int, user: str, token: str, kernel: str, pattern: str, until: float, tally: Tally) -> None:
    base = f"http://127.0.0.1:{port}/user/{user}"
    headers = {"Authorization": f"token {token}"}
    fresh = pattern == "new-channel"
    if fresh:
        headers["Connection"] = "close"
    session_id = uuid.uuid4().hex
    ws_url = f"{base}/api/kernels/{kernel}/channels?session_id={session_id}"
    # HTTP on one connection (kept alive, or closed after each request); websockets on connections of their own.
    connector = aiohttp.TCPConnector(limit=1, force_close=fresh)
    async with (
        aiohttp.ClientSession(connector=connector, headers=headers) as http,
        aiohttp.ClientSession(headers={"Authorization": headers["Authorization"]}) as sockets,
    ):
        ws = None if fresh else await sockets.ws_connect(ws_url, max_msg_size=0)

        async def run_code() -> None:
            if ws is not None:
                await execute(ws, session_id)
                return
            async with sockets.ws_connect(ws_url, max_msg_size=0) as fresh_ws:
                await execute(fresh_ws, session_id)

        async def get(path: str) -> None:
            async with http.get(f"{base}/{path}") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET {path}: {response.status}")

        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("execute", run_code), ("status", lambda: get("api/status")), ("contents", lambda: get("api/contents")),
        ]  # fmt: skip
        try:
            while time.perf_counter() < until:
                for kind, step in steps:
                    started = time.perf_counter()
                    try:
                        await asyncio.wait_for(step(), 30)
                    except (aiohttp.ClientError, RuntimeError, TimeoutError, OSError):
                        tally.errors += 1
                        continue
                    tally.latencies[kind].append(time.perf_counter() - started)
        finally:
            if ws is not None:
                await ws.close()


@dataclass
class Samples:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0

    def add(self, tally: Tally, seconds: float) -> None:
        self.rates.append(tally.ops() / seconds)
        for kind, values in tally.latencies.items():
            self.latencies += values
            self.by_kind.setdefault(kind, []).extend(values)
        self.errors += tally.errors

    def figures(self) -> dict[str, float]:
        ms = 1e3
        figures = {
            "ops_per_s": statistics.median(self.rates),
            "p50_ms": statistics.median(self.latencies) * ms if self.latencies else 0.0,
            "p99_ms": percentile(self.latencies, 0.99) * ms if self.latencies else 0.0,
            "errors": float(self.errors),
        }
        for kind, values in self.by_kind.items():
            if values:
                figures[f"{kind}_p50_ms"] = statistics.median(values) * ms
        return figures


async def measure(
    ports: dict[str, int], kernels: dict[str, str], token: str, pattern: str, seconds: float
) -> tuple[Tally, float]:
    tally = Tally()
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(user_load(port, user, token, kernels[user], pattern, until, tally) for user, port in ports.items())
    )
    return tally, time.perf_counter() - started


# --- the run ------------------------------------------------------------------------------------


async def run(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    key_path, public = client_key(workdir)
    users = [f"user{i}" for i in range(sizes.users)]
    results: dict[str, Any] = {"sizes": asdict(sizes), "modes": {}}

    async with AsyncExitStack() as stack:
        print("starting JupyterHub and the servers", file=sys.stderr, flush=True)
        hub = await start_hub(stack, workdir)
        direct = await start_servers(hub, users)
        kernels = {user: await start_kernel(port, user, hub.token) for user, port in direct.items()}
        modes = {"direct": direct}
        servers = {"ours": (await start_ours(stack, workdir, public, list(direct.values())), "jhuboutpost")}
        if os.path.exists(SSHD):
            servers["openssh"] = (await start_openssh(stack, workdir, public), getpass.getuser())
        else:
            print(f"{SSHD} not found (apt-get install openssh-server): no OpenSSH comparison", file=sys.stderr)
        for mode, (server, login) in servers.items():
            client = Client(workdir, key_path, server.port, login)
            local = await client.forward_all(list(direct.values()))
            modes[mode] = dict(zip(users, local, strict=True))
            stack.push_async_callback(client.run, "-O", "exit")

        samples = {(pattern, mode): Samples() for pattern in PATTERNS for mode in modes}
        for ports in modes.values():  # warm up: every kernel answers through every mode
            await measure(ports, kernels, hub.token, "new-channel", 0.5)
        for number in range(1, sizes.rounds + 1):
            for pattern in PATTERNS:
                order = list(modes) if number % 2 else list(reversed(modes))
                for mode in order:
                    print(f"round {number}/{sizes.rounds}: {pattern} {mode}", file=sys.stderr, flush=True)
                    tally, elapsed = await measure(modes[mode], kernels, hub.token, pattern, sizes.seconds)
                    samples[pattern, mode].add(tally, elapsed)
        for (pattern, mode), sample in samples.items():
            results["modes"].setdefault(pattern, {})[mode] = sample.figures()
    return results


def report(results: dict[str, Any]) -> str:
    lines = [f"{'':24} {'direct':>9} {'ours':>9} {'openssh':>9} {'ours/openssh':>13}  goal"]
    ratios: dict[str, dict[str, float | None]] = {}
    goals: dict[str, Callable[[float], bool]] = {
        "ops_per_s": lambda r: r >= 0.8, "p50_ms": lambda r: r <= 1.2, "p99_ms": lambda r: r <= 1.2,
    }  # fmt: skip
    for pattern, modes in results["modes"].items():
        ours, stock = modes["ours"], modes.get("openssh")
        for key, label in (("ops_per_s", "ops/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("errors", "errors")):
            ratio = ours[key] / stock[key] if stock and stock[key] else None
            ratios.setdefault(pattern, {})[key] = ratio
            cells = [f"{modes['direct'][key]:>9.1f}", f"{ours[key]:>9.1f}", f"{stock[key]:>9.1f}" if stock else " " * 9]
            goal = goals.get(key)
            verdict = ("met" if goal(ratio) else "MISSED") if goal and ratio is not None else ""
            lines.append(
                f"{pattern + ' ' + label:24} {' '.join(cells)} {f'{ratio:.2f}x' if ratio else '-':>13}  {verdict}"
            )
    results["ratios_ours_to_openssh"] = ratios
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hubload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s per pattern and mode")
    parser.add_argument("--users", type=int, help="users at once (default 6)")
    parser.add_argument("--seconds", type=float, help="seconds per pattern, mode and round (default 5)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    sizes = Sizes(args.users or sizes.users, args.seconds or sizes.seconds, args.rounds or sizes.rounds)
    run_and_print(lambda workdir: run(sizes, workdir), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

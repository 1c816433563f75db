"""Tunnel benchmark: the same loads directly over loopback, through our daemon, and through a stock
OpenSSH sshd, in one run, with the hub's real OpenSSH client (one ControlMaster per server).

    python -m bench.tunnel [--quick] [--rounds N] [--json results.json]

Shapes: bulk download; small requests on a kept-alive connection (p50/p99), answered in one write
and in two (headers, then body, as many HTTP servers do); small requests on a new connection each
(the hub's proxy does this a lot); 50 forwards on one SSH connection with 8 concurrent clients.

Our daemon runs as its own process (`python -m sshd`: uvloop, INFO logging, Redis lookups, as
deployed), so does OpenSSH's (`/usr/sbin/sshd -D` on a high port, default cipher negotiation), and
so do the target servers; this process only generates load. The modes are measured in interleaved
rounds, so a noisy neighbour hurts them alike; loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncssh
import uvloop
import yaml

ROOT = Path(__file__).resolve().parents[1]
SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
REQUEST = b"GET /user/alice/api/kernels HTTP/1.1\r\nHost: hub\r\nAccept: */*\r\n\r\n"
BODY = b'{"kernels": []}' * 8
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
MULTI_FORWARDS = 50
MULTI_CLIENTS = 8
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Sizes:
    """Work per mode and round."""

    rounds: int
    bulk_bytes: int
    keepalive_requests: int
    newconn_requests: int
    multi_requests_per_client: int


FULL = Sizes(5, 128 << 20, 1000, 300, 25)
QUICK = Sizes(2, 32 << 20, 300, 100, 10)


# --- targets: their own process ---------------------------------------------------------------


async def serve_targets(forwards: int) -> None:
    """Bulk source and HTTP-ish responders; prints their ports as a JSON line, serves until stdin closes."""
    chunk = os.urandom(1 << 20)

    async def bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remaining = int.from_bytes(await reader.readexactly(8), "big")
        while remaining > 0:
            writer.write(chunk[: min(remaining, len(chunk))])
            remaining -= len(chunk)
            await writer.drain()
        writer.close()

    def responder(*parts: bytes) -> Handler:
        async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    for part in parts:
                        writer.write(part)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        return http

    async def listen(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        return int(server.sockets[0].getsockname()[1])

    ports = {
        "bulk": await listen(bulk),
        "http": await listen(responder(HEAD + BODY)),
        "split": await listen(responder(HEAD, BODY)),  # two writes: two segments on the wire
        "multi": [await listen(responder(HEAD + BODY)) for _ in range(forwards)],
    }
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# --- the loads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """Where one mode's loads connect: the targets themselves, or the local ends of the forwards."""

    bulk: int
    http: int
    split: int
    multi: list[int]
    server: Server | None = None  # the SSH server between, whose CPU time is counted

    @classmethod
    def of(cls, ports: list[int], server: Server) -> Endpoints:
        return cls(ports[0], ports[1], ports[2], ports[3:], server)

    def ports(self) -> list[int]:
        return [self.bulk, self.http, self.split, *self.multi]


@dataclass
class Samples:
    bulk_mib_s: list[float] = field(default_factory=list)
    keepalive: list[float] = field(default_factory=list)
    split: list[float] = field(default_factory=list)
    newconn_per_s: list[float] = field(default_factory=list)
    newconn: list[float] = field(default_factory=list)
    newconn_cpu: list[float] = field(default_factory=list)  # the SSH server's CPU seconds per request
    multi_per_s: list[float] = field(default_factory=list)
    multi: list[float] = field(default_factory=list)
    multi_errors: int = 0

    def figures(self) -> dict[str, float]:
        us = 1e6
        return {
            "bulk_mib_s": statistics.median(self.bulk_mib_s),
            "keepalive_p50_us": statistics.median(self.keepalive) * us,
            "keepalive_p99_us": percentile(self.keepalive, 0.99) * us,
            "split_p50_us": statistics.median(self.split) * us,
            "split_p99_us": percentile(self.split, 0.99) * us,
            "newconn_per_s": statistics.median(self.newconn_per_s),
            "newconn_p50_us": statistics.median(self.newconn) * us,
            "newconn_cpu_us": statistics.median(self.newconn_cpu) * us if self.newconn_cpu else 0.0,
            "newconn_p99_us": percentile(self.newconn, 0.99) * us,
            "multi_per_s": statistics.median(self.multi_per_s),
            "multi_p99_us": percentile(self.multi, 0.99) * us if self.multi else 0.0,
            "multi_errors": self.multi_errors,
        }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bulk(port: int, size: int) -> float:
    """Download `size` bytes; MiB/s. Reads into one buffer, so the reader costs little."""
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setblocking(False)
        buffer = bytearray(1 << 20)
        started = time.perf_counter()
        await loop.sock_sendall(sock, size.to_bytes(8, "big"))
        received = 0
        while count := await loop.sock_recv_into(sock, buffer):
            received += count
        elapsed = time.perf_counter() - started
    if received != size:
        raise RuntimeError(f"bulk: got {received} of {size} bytes")
    return size / elapsed / (1 << 20)


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    if head != HEAD:
        raise RuntimeError(f"unexpected answer {head[:40]!r}")
    await reader.readexactly(len(BODY))


async def keepalive(port: int, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(20):  # warm up
        await request(reader, writer)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await request(reader, writer)
        times.append(time.perf_counter() - started)
    writer.close()
    return times


async def one_shot(port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await request(reader, writer)
    finally:
        writer.close()
    return time.perf_counter() - started


NEWCONN_WARMUP = 10


async def newconn(port: int, count: int) -> tuple[float, list[float]]:
    for _ in range(NEWCONN_WARMUP):
        await one_shot(port)
    started = time.perf_counter()
    times = [await one_shot(port) for _ in range(count)]
    return count / (time.perf_counter() - started), times


async def multi(ports: list[int], clients: int, per_client: int) -> tuple[float, list[float], int]:
    """`clients` concurrent loops, a new connection per request, round-robin over the forwards."""
    times: list[float] = []
    errors = 0

    async def client(offset: int) -> None:
        nonlocal errors
        for i in range(per_client):
            try:
                times.append(await asyncio.wait_for(one_shot(ports[(offset + i * clients) % len(ports)]), 10))
            except (OSError, RuntimeError, asyncio.IncompleteReadError, TimeoutError):
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return clients * per_client / (time.perf_counter() - started), times, errors


async def measure_round(at: Endpoints, sizes: Sizes, into: Samples) -> None:
    into.bulk_mib_s.append(await bulk(at.bulk, sizes.bulk_bytes))
    into.keepalive += await keepalive(at.http, sizes.keepalive_requests)
    into.split += await keepalive(at.split, sizes.keepalive_requests)
    cpu = at.server.cpu_seconds() if at.server else 0.0
    rate, times = await newconn(at.http, sizes.newconn_requests)
    if at.server:
        into.newconn_cpu.append((at.server.cpu_seconds() - cpu) / (sizes.newconn_requests + NEWCONN_WARMUP))
    into.newconn_per_s.append(rate)
    into.newconn += times
    rate, times, errors = await multi(at.multi, MULTI_CLIENTS, sizes.multi_requests_per_client)
    into.multi_per_s.append(rate)
    into.multi += times
    into.multi_errors += errors


# --- processes: targets, our daemon, OpenSSH's sshd, the OpenSSH client -------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_port(port: int, proc: asyncio.subprocess.Process, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


@asynccontextmanager
async def process(
    *args: str, stop: signal.Signals = signal.SIGTERM, **kwargs: Any
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process, sent `stop` on exit (then SIGKILL after 10 s)."""
    proc = await asyncio.create_subprocess_exec(*args, **kwargs)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(stop)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_", "OUTPOST_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "lib"), str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class Client:
    """The hub's OpenSSH client: a ControlMaster, then `-O forward -L` per service."""

    def __init__(self, workdir: Path, key: Path, port: int, user: str) -> None:
        self.destination = f"{user}@127.0.0.1"
        self.options = [
            "-F", "/dev/null", "-p", str(port), "-oControlMaster=auto", "-oControlPersist=yes",
            f"-oControlPath={workdir / f'ctl-{port}'}", "-oStrictHostKeyChecking=accept-new",
            f"-oUserKnownHostsFile={workdir / 'known_hosts'}", "-oGlobalKnownHostsFile=/dev/null",
            f"-oIdentityFile={key}", "-oIdentitiesOnly=yes", "-oBatchMode=yes", "-oServerAliveInterval=15",
        ]  # fmt: skip

    async def run(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            SSH, *self.options, *args, self.destination, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(),
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh {' '.join(args)}: {err.decode(errors='replace').strip()}")
        return err.decode(errors="replace")

    async def forward_all(self, ports: list[int]) -> list[int]:
        """Start the master and forward each port; returns the local ports."""
        await self.run("-f", "-N", "-n")
        local = []
        for port in ports:
            local.append(free_port())
            await self.run("-O", "forward", f"-L127.0.0.1:{local[-1]}:127.0.0.1:{port}")
        return local

    async def cipher(self) -> str:
        """The cipher the client negotiates by default (`ssh -v` on a connection of its own)."""
        proc = await asyncio.create_subprocess_exec(
            SSH, *self.options, "-oControlMaster=no", "-oControlPath=none", "-v", "-N", self.destination,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(),
        )  # fmt: skip
        assert proc.stderr is not None
        try:
            while line := await asyncio.wait_for(proc.stderr.readline(), 10):
                if b"kex: server->client cipher:" in line:
                    return line.decode().split("cipher:")[1].split()[0]
            return "?"
        finally:
            proc.kill()
            await proc.wait()


@dataclass(frozen=True)
class Server:
    """An SSH server under test: its port, and its process (OpenSSH's forks a child per connection)."""

    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of the process and its children alive now."""
        import psutil

        total = 0.0
        try:
            root = psutil.Process(self.pid)
            for proc in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = proc.cpu_times()
                    total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
        return total


async def start_ours(stack: AsyncExitStack, workdir: Path, public_key: str, target_ports: list[int]) -> Server:
    """Our daemon exactly as deployed: `python -m sshd`, its Redis, the targets stored as running."""
    import redis.asyncio as aioredis
    from cryptography.fernet import Fernet

    from outpost.cli.embedded_redis import EmbeddedRedis
    from outpost.crypto import Crypt
    from outpost.flavors import FlavorLimits
    from outpost.models import ServiceId
    from outpost.store import Store

    redis = EmbeddedRedis(workdir / "redis", appendonly=False).start()
    stack.callback(redis.stop)
    crypt_key = Fernet.generate_key().decode()
    store = Store(aioredis.Redis.from_url(redis.url), Crypt([crypt_key]))
    stack.push_async_callback(store.aclose)
    for i, port in enumerate(target_ports):
        sid = ServiceId("bench", f"server{i}", "1")
        body: dict[str, Any] = {"name": sid.name, "env": {}}
        await store.create(sid, user="u", user_id="1", flavor=None, body=body, certs=None, limits=FlavorLimits())
        await store.mark_running(sid, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    port = free_port()
    values = {
        "cryptKey": crypt_key, "redisUrl": redis.url, "sshListenHost": "127.0.0.1", "sshPort": port,
        "sshHostKey": str(workdir / "ours_host_key"),
        "sshPublicKeys": [{"hub": "bench", "key": public_key}],
    }  # fmt: skip
    (workdir / "values.yaml").write_text(yaml.safe_dump(values))
    log = stack.enter_context((workdir / "ours.log").open("wb"))
    args = (sys.executable, "-m", "sshd", "--config", str(workdir / "values.yaml"), "--metrics-port", "0")
    proc = await stack.enter_async_context(
        process(*args, env=child_env(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    )
    await wait_port(port, proc, "our daemon")
    return Server(port, proc.pid)


async def start_openssh(stack: AsyncExitStack, workdir: Path, public_key: str) -> Server:
    """Stock sshd on a high port, as its own process: default ciphers, local forwards allowed."""
    port = free_port()
    host_key = workdir / "stock_host_key"
    host_key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"))
    host_key.chmod(0o600)
    (workdir / "authorized_keys").write_text(public_key + "\n")
    if os.geteuid() == 0:  # sshd's privilege separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile none\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "AllowTcpForwarding local\nPermitTTY no\nX11Forwarding no\n"
    )
    log = stack.enter_context((workdir / "openssh.log").open("wb"))
    proc = await stack.enter_async_context(
        process(SSHD, "-D", "-e", "-f", str(config), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    )
    await wait_port(port, proc, "OpenSSH sshd")
    return Server(port, proc.pid)


def client_key(workdir: Path) -> tuple[Path, str]:
    """The hub's SSH key: its private key file (0600) and its public line."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = workdir / "client_key"
    key.write_private_key(path)
    path.chmod(0o600)
    return path, key.export_public_key().decode().strip()


def run_and_print(
    measure: Callable[[Path], Awaitable[dict[str, Any]]], report: Callable[[dict[str, Any]], str], out: Path | None
) -> None:
    """Run `measure` on uvloop in a temporary directory; print the report and the JSON (also to `out`)."""
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as tmp:
        results = uvloop.run(measure(Path(tmp)))
    print(report(results))
    print(json.dumps(results, indent=2))
    if out:
        out.write_text(json.dumps(results, indent=2))


async def run(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    key_path, public = client_key(workdir)
    results: dict[str, Any] = {"sizes": asdict(sizes), "ciphers": {}, "modes": {}}

    async with AsyncExitStack() as stack:
        targets = await stack.enter_async_context(
            process(
                sys.executable,
                "-m",
                "bench.tunnel",
                "--targets",
                str(MULTI_FORWARDS),
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )  # fmt: skip
        )
        assert targets.stdout is not None and targets.stdin is not None
        stack.callback(targets.stdin.close)
        ports = json.loads(await asyncio.wait_for(targets.stdout.readline(), 20))
        direct = Endpoints(ports["bulk"], ports["http"], ports["split"], ports["multi"])
        modes = {"direct": direct}

        servers = {"ours": (await start_ours(stack, workdir, public, direct.ports()), "jhuboutpost")}
        if os.path.exists(SSHD):
            servers["openssh"] = (await start_openssh(stack, workdir, public), getpass.getuser())
            results["openssh_version"] = subprocess.run([SSH, "-V"], capture_output=True, text=True).stderr.strip()
        else:
            print(f"{SSHD} not found (apt-get install openssh-server): no OpenSSH comparison", file=sys.stderr)
        for mode, (server, user) in servers.items():
            client = Client(workdir, key_path, server.port, user)
            results["ciphers"][mode] = await client.cipher()
            modes[mode] = Endpoints.of(await client.forward_all(direct.ports()), server)
            stack.push_async_callback(client.run, "-O", "exit")

        samples = {mode: Samples() for mode in modes}
        for number in range(1, sizes.rounds + 1):
            for mode, endpoints in modes.items():
                print(f"round {number}/{sizes.rounds}: {mode}", file=sys.stderr, flush=True)
                await measure_round(endpoints, sizes, samples[mode])
        results["modes"] = {mode: sample.figures() for mode, sample in samples.items()}
    return results


# --- report ---------------------------------------------------------------------------------------

Goal = Callable[[float, float], bool]
ROWS: list[tuple[str, str, Goal | None]] = [
    ("bulk_mib_s", "bulk download MiB/s", lambda ours, ssh: ours >= 0.75 * ssh),
    ("keepalive_p50_us", "kept-alive p50 µs", None),
    ("keepalive_p99_us", "kept-alive p99 µs", lambda ours, ssh: ours <= ssh),
    ("split_p50_us", "kept-alive, 2 writes p50 µs", None),
    ("split_p99_us", "kept-alive, 2 writes p99 µs", lambda ours, ssh: ours <= ssh),
    ("newconn_per_s", "new conn/request req/s", lambda ours, ssh: ours >= 0.7 * ssh),
    ("newconn_p50_us", "new conn/request p50 µs", lambda ours, ssh: ours <= 1.2 * ssh),
    ("newconn_p99_us", "new conn/request p99 µs", None),
    ("newconn_cpu_us", "new conn: server CPU µs/request", None),
    ("multi_per_s", f"{MULTI_FORWARDS} fwd x {MULTI_CLIENTS} clients req/s", None),
    ("multi_p99_us", f"{MULTI_FORWARDS} fwd x {MULTI_CLIENTS} clients p99 µs", None),
    ("multi_errors", f"{MULTI_FORWARDS} fwd x {MULTI_CLIENTS} clients errors", lambda ours, ssh: ours == 0),
]


def report(results: dict[str, Any]) -> str:
    modes = results["modes"]
    ours, stock = modes["ours"], modes.get("openssh")
    lines = [f"{'':36} {'direct':>9} {'ours':>9} {'openssh':>9} {'ours/openssh':>13}  goal"]
    ratios: dict[str, float | None] = {}
    for key, label, goal in ROWS:
        cells = [f"{modes['direct'][key]:>9.0f}", f"{ours[key]:>9.0f}", f"{stock[key]:>9.0f}" if stock else " " * 9]
        ratio = ours[key] / stock[key] if stock and stock[key] else None
        verdict = ("met" if goal(ours[key], stock[key]) else "MISSED") if stock and goal else ""
        ratios[key] = ratio
        lines.append(f"{label:36} {' '.join(cells)} {f'{ratio:.2f}x' if ratio else '-':>13}  {verdict}")
    results["ratios_ours_to_openssh"] = ratios
    lines.append(f"ciphers the OpenSSH client negotiated: {results['ciphers']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tunnel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads: a smoke run of ~15 s")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per mode (default 5, quick 2)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--targets", type=int, help=argparse.SUPPRESS)  # internal: be the target process
    args = parser.parse_args()
    if args.targets is not None:
        uvloop.run(serve_targets(args.targets))
        return 0
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = replace(sizes, rounds=args.rounds)
    run_and_print(lambda workdir: run(sizes, workdir), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Connections that never authenticate cannot starve the hubs: one source holding 1,000 idle or
half-open sockets to the SSH port and to the API, against `outpost dev` (API and SSH daemon in one
process) limited to 1,024 descriptors, leaves another hub's real OpenSSH login and its poll working;
so does the same flood against a function served as its container serves it (`outpost serve-function`).

The flood comes from 127.0.0.5, the hub from 127.0.0.1 (both loopback: 127.0.0.0/8 is all local).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from outpost.cli.devserver import functions_dir
from outpost.store import Store
from tests.e2e.processes import VENV_BIN, Proc, free_port, listening, wait_until
from tests.security.stack import Stack, launch, shut_down
from tests.sshd.conftest import client_keys, echo_server, openssh, store  # noqa: F401 (fixtures)
from tests.sshd.helpers import CRYPT_KEY, ClientKey, OpenSSHFactory, Target, exchange, forward, run_service
from tests.sshd.helpers import start_daemon_process as start_sshd

FLOOD = 1000
DESCRIPTORS = 1024
ATTACKER = "127.0.0.5"
SSH_PER_SOURCE = 10  # the defaults: sshMaxStartupsPerSource, apiMaxConnectionsPerSource
API_PER_SOURCE = 64


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`outpost dev` with the default limits, under RLIMIT_NOFILE 1,024."""
    running = launch(tmp_path_factory.mktemp("preauth"), f"preauth-{secrets.token_hex(4)}", max_descriptors=DESCRIPTORS)
    yield running
    shut_down(running)


async def _open(
    port: int, greeting: bytes, source: str = ATTACKER
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """One connection from `source` that sends `greeting` (maybe nothing) and then waits."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout=10
        )
    except (OSError, TimeoutError):
        return None  # the server's queue is full: the flood is already doing its worst
    if greeting:
        writer.write(greeting)
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


async def flood(
    port: int, half_open: bytes, sources: tuple[str, ...] = (ATTACKER,)
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """FLOOD connections at once, spread over `sources`: half send nothing, half send `half_open`."""
    opened = await asyncio.gather(
        *(_open(port, half_open if i % 2 else b"", sources[i % len(sources)]) for i in range(FLOOD))
    )
    return [conn for conn in opened if conn is not None]


async def held_open(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    """How many of the flood's connections the server still holds (the others it closed)."""
    closed = await asyncio.gather(*(_closed_by_server(reader, within=3) for reader, _ in conns))
    return closed.count(False)


def close_all(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in conns:
        writer.transport.abort()


def refusal_lines(stack: Stack) -> list[str]:
    return [line for line in stack.log().splitlines() if f"connection refused source={ATTACKER}" in line]


@pytest.mark.asyncio
async def test_ssh_flood_leaves_other_hubs_login(limited: Stack, tmp_path: Path) -> None:
    conns = await flood(limited.ssh_port, b"SSH-2.0-flood\r\n")
    client = limited.ssh("hubA", tmp_path / "ssh")
    try:
        login = await client.start_master()
        assert login.returncode == 0, login.stderr
        assert await held_open(conns) <= SSH_PER_SOURCE  # the rest closed at once
    finally:
        close_all(conns)
        await client.mux("exit")
    lines = refusal_lines(limited)
    assert any("(per-source)" in line for line in lines), limited.log()[-3000:]
    assert len(lines) <= 2  # one line a minute per source and cap, not one per connection
    assert "source=127.0.0.1" not in limited.log()


@pytest.mark.asyncio
async def test_api_flood_leaves_other_hubs_poll(limited: Stack) -> None:
    conns = await flood(limited.api_port, b"GET /services HTTP/1.1\r\nHost: outpost\r\nAuthoriz")
    try:
        async with httpx.AsyncClient(base_url=limited.url, headers=limited.tenants["hubB"].auth, timeout=30) as hub:
            poll = await hub.get("/services")
        assert poll.status_code == 200, poll.text
        assert poll.json() == []
        assert await held_open(conns) <= API_PER_SOURCE
    finally:
        close_all(conns)
    lines = refusal_lines(limited)
    assert any("apiMaxConnectionsPerSource" in line for line in lines), limited.log()[-3000:]
    assert len(lines) <= 2


@pytest.mark.asyncio
async def test_both_floods_at_once_leave_login_and_poll(limited: Stack, tmp_path: Path) -> None:
    ssh = await flood(limited.ssh_port, b"SSH-2.0-flood\r\n")
    api = await flood(limited.api_port, b"POST /services HTTP/1.1\r\nHost: outpost\r\nContent-Length: 100\r\n\r\n{")
    client = limited.ssh("hubB", tmp_path / "ssh")
    try:
        login = await client.start_master()
        assert login.returncode == 0, login.stderr
        async with httpx.AsyncClient(base_url=limited.url, headers=limited.tenants["hubB"].auth, timeout=30) as hub:
            poll = await hub.get("/services")
        assert poll.status_code == 200, poll.text
    finally:
        close_all(ssh + api)
        await client.mux("exit")


@pytest.mark.asyncio
async def test_flood_of_a_function_container_leaves_other_hubs_poll(limited: Stack, tmp_path: Path) -> None:
    """The poll function as the image runs it, on the stack's Redis, under the same descriptor limit."""
    port = free_port()
    env = limited.function_env(tmp_path)
    cmd = ["prlimit", f"--nofile={DESCRIPTORS}:{DESCRIPTORS}", "--", str(VENV_BIN / "outpost"), "serve-function",
           "--target", "poll_service", "--source", str(functions_dir() / "poll" / "main.py"),
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    function = Proc.spawn("poll function", cmd, env, tmp_path / "function.log", cwd=tmp_path)
    try:
        wait_until("the poll function", lambda: function.check_alive() or listening(port), timeout=60)
        conns = await flood(port, b"GET /services HTTP/1.1\r\nHost: outpost\r\n")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as hub:
                poll = await hub.get("/services", headers=limited.tenants["hubB"].auth)
            assert poll.status_code == 200, poll.text
            assert await held_open(conns) <= API_PER_SOURCE
        finally:
            close_all(conns)
    finally:
        function.stop(signal.SIGTERM)
    assert "Traceback" not in function.text(), function.tail()
    assert f"connection refused source={ATTACKER}" in function.text()


@pytest.mark.asyncio
async def test_many_sources_leave_the_daemon_descriptors_for_its_hubs(
    redis_url: str,
    tmp_path: Path,
    client_keys: dict[str, ClientKey],  # noqa: F811
    store: Store,  # noqa: F811
    echo_server: Target,  # noqa: F811
    openssh: OpenSSHFactory,  # noqa: F811
) -> None:
    """`python -m sshd` (uvloop) with 256 descriptors: 1,000 idle connections from 20 sources, more than
    the per-source cap could stop, meet the global cap; the hub's established connection still opens
    forwards (each needs a descriptor), and once the flood ends a new login works again."""
    await run_service(store, "a", "lab", echo_server.address)
    values = {
        "cryptKey": CRYPT_KEY, "redisUrl": redis_url, "sshListenHost": "127.0.0.1", "sshPort": 0,
        "sshHostKey": str(tmp_path / "host_key"), "sshPublicKeys": [{"hub": "a", "key": client_keys["hub_a"].public}],
    }  # fmt: skip
    daemon = await start_sshd(tmp_path / "values.yaml", values, max_descriptors=256)
    try:
        port = int((await daemon.wait_for(r"sshd listening on 127\.0\.0\.1:(\d+)")).group(1))
        hub = openssh(port, "hub_a")
        assert (await hub.start_master()).returncode == 0
        sources = tuple(f"127.0.1.{n}" for n in range(1, 21))
        conns = await flood(port, b"SSH-2.0-flood\r\n", sources)
        try:
            assert await exchange(await forward(hub, echo_server), b"still here") == b"still here"
            assert await held_open(conns) <= 100  # sshMaxStartups' full
        finally:
            close_all(conns)
        # The daemon frees the flood's places as it reads the closes: a new login works once it has.
        deadline = asyncio.get_running_loop().time() + 20
        while (login := await openssh(port, "hub_a").start_master()).returncode != 0:
            assert asyncio.get_running_loop().time() < deadline, login.stderr
            await asyncio.sleep(0.2)
    finally:
        await daemon.stop()
    assert "(max-startups)" in daemon.text
    assert "Traceback" not in daemon.text

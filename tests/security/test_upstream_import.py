"""Issue 23, attack 5: `outpost import-upstream` published what a crafted upstream database said. A row whose
start answer named the outpost's own API or SSH port was imported, and hub A's key then forwarded there; rows
kept LD_PRELOAD, a `misc.cmd` and callback URLs no start would pass; of two rows naming one address the lower
id won. Now an import is a start: the start's checks, no address of the outpost's own or named twice, and the
address published only once the backend proves the server serves it. Against `outpost dev` with the spawner
backend (LocalProcessSpawner, as upstream ran it), real servers, and the hubs' real OpenSSH clients."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dotenv
import pytest
from cryptography.fernet import Fernet

from tests.cli.test_upstream_import import token, upstream_row, write_database
from tests.conftest import TINY_SERVER
from tests.e2e.processes import VENV_BIN, free_port, listening, wait_until
from tests.security.stack import Stack, launch, shut_down
from tests.sshd.helpers import Target, exchange, forward

pytestmark = pytest.mark.asyncio(loop_scope="module")
SPAWNER = 'c.JupyterHubOutpost.spawner_class = "localprocess"\n'


@pytest.fixture(scope="module")
def spawner_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`outpost dev` whose backend is upstream's LocalProcessSpawner, as a migrated outpost runs it."""
    running = launch(
        tmp_path_factory.mktemp("import"), f"security-import-{secrets.token_hex(4)}", backend_lines=SPAWNER
    )
    yield running
    shut_down(running)


@pytest.fixture
def servers() -> Iterator[list[tuple[int, int]]]:
    """Four running servers, as upstream's spawner left them: (pid, port) each."""
    procs = []
    for _ in range(4):
        port = free_port()
        env = {"PATH": "/usr/bin:/bin", "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/"}
        procs.append((subprocess.Popen([str(VENV_BIN / "python"), str(TINY_SERVER)], env=env), port))
    for _, port in procs:
        wait_until(f"a server on {port}", lambda port=port: listening(port), 15)
    yield [(proc.pid, port) for proc, port in procs]
    for proc, _ in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def environment(user: str = "alice", **extra: str) -> dict[str, str]:
    return {
        "JUPYTERHUB_API_TOKEN": "token-" + secrets.token_hex(8), "JUPYTERHUB_USER": user, "JUPYTERHUB_USER_ID": "7",
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/{user}/srv/", "JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api", **extra,
    }  # fmt: skip


def import_upstream(stack: Stack, database: Path) -> subprocess.CompletedProcess[str]:
    """The administrator's command, with the env file `outpost dev` wrote."""
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(stack.tmp)}
    command = [str(VENV_BIN / "outpost"), "--env-file", str(stack.data_dir / "env"), "import-upstream"]
    return subprocess.run([*command, "--database", f"sqlite:///{database}"], env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


async def test_an_import_publishes_only_addresses_its_servers_prove(
    spawner_stack: Stack, servers: list[tuple[int, int]], tmp_path: Path
) -> None:
    stack = spawner_stack
    fernet = Fernet(dotenv.dotenv_values(stack.data_dir / "env")["OUTPOST_CRYPT_KEY"] or "")
    (legit, legit_port), (shared, shared_port), (_, init_port), (_, foreign_port) = servers
    sleeper = subprocess.Popen(["sleep", "600"])  # a process that listens nowhere
    outpost = stack.proc.pid

    def row(hub: str, name: str, state: dict[str, Any], answer: str, **body: Any) -> dict[str, Any]:
        columns = {}
        if body:
            columns["body"] = token(fernet, {"env": environment(), "misc": {}, "user_options": {}, **body})
        return upstream_row(fernet, hub, name, "1", environment(), state, answer, **columns)

    rows = [
        row("hubA", "api", {"pid": outpost}, f"127.0.0.1:{stack.api_port}"),
        row("hubA", "ssh", {"pid": outpost}, f"http://localhost:{stack.ssh_port}"),
        row("hubA", "preload", {"pid": legit}, "127.0.0.1:1", env=environment(LD_PRELOAD="/tmp/evil.so")),
        row("hubB", "cmd", {"pid": legit}, "127.0.0.1:2", misc={"cmd": ["sh", "-c", "touch /tmp/pwned"]}),
        # Two rows naming one address: the lower id, hubB's, used to win.
        row("hubB", "thief", {"pid": shared}, f"127.0.0.1:{shared_port}"),
        row("hubA", "victim", {"pid": shared}, f"127.0.0.1:{shared_port}"),
        row("hubB", "init", {"pid": 1}, f"127.0.0.1:{init_port}"),  # every process descends from pid 1
        row("hubB", "foreign", {"pid": sleeper.pid}, f"127.0.0.1:{foreign_port}"),
        row("hubA", "legit", {"pid": legit}, f"127.0.0.1:{legit_port}",
            env=environment(JUPYTERHUB_EVENTS_URL="http://169.254.169.254/latest/meta-data")),
    ]  # fmt: skip
    database = tmp_path / "upstream.db"
    write_database(database, rows)
    try:
        result = import_upstream(stack, database)
    finally:
        sleeper.kill()
        sleeper.wait()
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    refusals = {
        "[1/9] hubA/api/1": f"127.0.0.1 port {stack.api_port} is the outpost's own listener",
        "[2/9] hubA/ssh/1": f"port {stack.ssh_port} is the outpost's own listener",
        "[3/9] hubA/preload/1": "does not pass these environment variables to servers: LD_PRELOAD",
        "[4/9] hubB/cmd/1": "does not allow overriding: cmd",
        "[5/9] hubB/thief/1": f"another row of upstream's database names its address 127.0.0.1:{shared_port}",
        "[6/9] hubA/victim/1": "another row of upstream's database names its address",
        "[7/9] hubB/init/1": "this outpost's own process descends from it",
        "[8/9] hubB/foreign/1": f"not proved to be its server's: The address 127.0.0.1:{foreign_port} is already",
    }
    for label, reason in refusals.items():
        line = next((line for line in out.splitlines() if line.startswith(label)), "")
        assert line.startswith(f"{label}: refused, skipped (") and reason in line, out
    assert (
        f"[9/9] hubA/legit/1: imported (user alice, address 127.0.0.1:{legit_port})\n"
        "  outpost: JUPYTERHUB_EVENTS_URL is not called: 169.254.169.254 is a link-local"  # noted, as for a start
    ) in out
    assert "imported 1, already present 0, not running 0, unreadable 0, refused 8" in out
    assert stack.address_index() == {f"127.0.0.1:{legit_port}": "outpost:hub:hubA:svc:legit:1"}
    assert not Path("/tmp/pwned").exists()

    # Hub A's key reaches its own server, and not the outpost's API or SSH port.
    client = stack.ssh("hubA", tmp_path / "ssh")
    assert (await client.start_master()).returncode == 0
    try:
        reply = await exchange(await forward(client, Target(legit_port)), b"GET /user/alice/srv/ HTTP/1.0\r\n\r\n")
        assert b"200 OK" in reply
        for port in (stack.api_port, stack.ssh_port):
            assert await exchange(await forward(client, Target(port)), b"GET /ping HTTP/1.0\r\n\r\n") == b""
    finally:
        await client.mux("exit")
    assert os.path.exists(f"/proc/{legit}")  # imported, not stopped: the test's fixture ends it

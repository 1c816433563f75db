"""A stolen hub key is only worth what its authorized_keys options allow: `from=` pins where it may log in
from, `permitopen=` and `restrict` narrow what it may reach, against the real `outpost dev` and OpenSSH."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncssh
import pytest

from tests.security.stack import Stack, launch, shut_down, start_body
from tests.sshd.helpers import OpenSSH, exchange, free_port

KEYS = {
    "pinned": 'from="10.0.0.0/8",restrict,port-forwarding',  # the admin pinned hubA's source network
    "narrow": 'restrict,port-forwarding,permitopen="127.0.0.1:1"',
    "no-forwarding": "restrict",
    "plain": 'restrict,port-forwarding,command="/bin/echo No commands allowed"',  # upstream's docs
    # The last flag wins in OpenSSH; asyncssh's dict of options kept only each flag's first place.
    "flag-repeated": "no-port-forwarding,port-forwarding,no-port-forwarding",
    "restrict-repeated": "restrict,port-forwarding,restrict",
}


@pytest.fixture(scope="module")
def key_paths(stack_dir: Path) -> dict[str, tuple[Path, str]]:
    paths = {}
    for name in KEYS:
        key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
        path = stack_dir / f"key-{name}"
        key.write_private_key(path)
        path.chmod(0o600)
        paths[name] = (path, key.export_public_key().decode().strip())
    return paths


@pytest.fixture(scope="module")
def stack(stack_dir: Path, key_paths: dict[str, tuple[Path, str]]) -> Iterator[Stack]:
    """Every key above is hubA's, each with its options."""
    entries = [{"hub": "hubA", "key": f"{KEYS[name]} {public}"} for name, (_, public) in key_paths.items()]
    running = launch(stack_dir / "stack", f"security-{secrets.token_hex(4)}", values={"sshPublicKeys": entries})
    yield running
    shut_down(running)


@pytest.fixture
def client(stack: Stack, key_paths: dict[str, tuple[Path, str]]) -> Iterator[Callable[[str], OpenSSH]]:
    """OpenSSH with one of the keys; masters told to exit and their directories removed afterwards."""
    clients: list[OpenSSH] = []

    def make(name: str) -> OpenSSH:
        workdir = Path(tempfile.mkdtemp(prefix="sshopt-", dir="/tmp"))  # a control socket path must stay short
        clients.append(OpenSSH(stack.ssh_port, key_paths[name][0], workdir))
        return clients[-1]

    yield make
    for ssh in clients:
        if ssh.control_path.exists():
            asyncio.run(ssh.mux("exit"))
        shutil.rmtree(ssh.workdir, ignore_errors=True)


def forwarded(ssh: OpenSSH, port: int) -> bytes:
    async def run() -> bytes:
        local = free_port()
        result = await ssh.mux("forward", f"-L127.0.0.1:{local}:127.0.0.1:{port}")
        assert result.returncode == 0, result.stderr
        return await exchange(local, b"GET /api HTTP/1.0\r\n\r\n")

    return asyncio.run(run())


def test_a_pinned_key_from_elsewhere_cannot_log_in(stack: Stack, client: Callable[[str], OpenSSH]) -> None:
    ssh = client("pinned")
    result = asyncio.run(ssh.start_master())
    assert result.returncode == 255 and "Permission denied (publickey)" in result.stderr
    assert "reason=from-mismatch" in stack.log()


@pytest.mark.parametrize(
    "name,reaches",
    [("plain", True), ("narrow", False), ("no-forwarding", False), ("flag-repeated", False),
     ("restrict-repeated", False)],
)  # fmt: skip
def test_options_narrow_what_a_key_reaches(
    clean: Stack, client: Callable[[str], OpenSSH], name: str, reaches: bool
) -> None:
    """hubA's own running server: the upstream-style key reaches it; a key whose permitopen names another
    address, or that is restricted, does not, though its hub owns the server."""
    body = start_body(name=f"opt-{name}")
    body["misc"] = {}
    response = clean.start("hubA", body)
    assert response.status_code == 200, response.text
    port = urlsplit(response.json()["service"]).port
    assert port is not None
    ssh = client(name)
    assert asyncio.run(ssh.start_master()).returncode == 0
    assert (forwarded(ssh, port) != b"") is reaches


def test_the_start_up_log_shows_every_option_and_what_they_add_up_to(stack: Stack) -> None:
    log = stack.log()
    assert "options=no-port-forwarding,port-forwarding,no-port-forwarding forwarding=no" in log
    assert "options=restrict,port-forwarding,restrict forwarding=no" in log
    assert "options=restrict,port-forwarding,command forwarding=yes" in log

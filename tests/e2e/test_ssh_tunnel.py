"""End to end through our SSH daemon: JupyterHub + OutpostSpawner with `ssh_during_startup=True`,
the real OpenSSH client exactly as forwardbasespawner drives it (ControlMaster, `-O check/forward/
cancel`, `StrictHostKeyChecking=accept-new`), and tunnel recreation after a daemon restart."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.e2e import harness
from tests.e2e.harness import HUB_CREDENTIAL, Hub, Outpost, SSHClientFiles
from tests.e2e.processes import Proc, free_port, progress, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sshd_port() -> int:
    """The port of the standalone daemon (`python -m sshd`), started and restarted by the test."""
    return free_port()


class StandaloneDaemon:
    """`python -m sshd` against outpost dev's Redis, as the chart runs it: its own process, restartable."""

    def __init__(self, outpost: Outpost, workdir: Path, port: int) -> None:
        self.outpost, self.workdir, self.port = outpost, workdir, port
        self.starts = 0
        self.proc = self._spawn()

    def _spawn(self) -> Proc:
        self.starts += 1
        return harness.start_sshd(self.outpost, self.workdir, self.port, log_name=f"sshd-{self.starts}.log")

    def stop(self) -> None:
        self.proc.stop(signal.SIGTERM)  # raises if it does not exit or leaves a process behind

    def start(self) -> None:
        self.proc = self._spawn()


@pytest.fixture(scope="module")
def sshd(outpost: Outpost, e2e_dir: Path, sshd_port: int) -> Iterator[StandaloneDaemon]:
    daemon = StandaloneDaemon(outpost, e2e_dir, sshd_port)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def outpost_config(e2e_dir: Path, ssh_files: SSHClientFiles) -> Path:
    return harness.outpost_values(e2e_dir, sshPublicKeys=[{"hub": HUB_CREDENTIAL, "key": ssh_files.public}])


@pytest.fixture(scope="module")
def hub_extra_config(ssh_files: SSHClientFiles, sshd_port: int, outpost: Outpost) -> str:
    # svc_create must stay on with ssh_during_startup: the client takes the address the hub connects
    # to from the svc step. Our hooks answer 127.0.0.1:<forwarded port> instead of creating a
    # Kubernetes Service. Servers named "viadev..." go through `outpost dev`'s own daemon.
    return f"""
# Servers named "async...": start_async. The client then cannot tunnel during the start (it has no
# address yet) and waits at http://<svc_name>:<port> until the outpost's setup-tunnel call arrives.
def _is_async(spawner):
    return spawner.name.startswith("async")

c.OutpostSpawner.start_async = _is_async
c.OutpostSpawner.ssh_during_startup = lambda spawner: not _is_async(spawner)
c.OutpostSpawner.svc_name_template = "127.0.0.1"
c.OutpostSpawner.svc_create = True
c.OutpostSpawner.ssh_custom_svc = lambda spawner, port_forward_info: ("127.0.0.1", spawner.port)
c.OutpostSpawner.ssh_custom_svc_remove = lambda spawner, port_forward_info: None
c.OutpostSpawner.ssh_node = "127.0.0.1"
c.OutpostSpawner.ssh_port = lambda spawner, info: (
    {outpost.ssh_port} if spawner.name.startswith("viadev") else {sshd_port}
)
c.OutpostSpawner.ssh_username = "jhuboutpost"
c.OutpostSpawner.ssh_key = {str(ssh_files.key)!r}
c.OutpostSpawner.ssh_forward_options = {ssh_files.forward_options()!r}
# Hub and server share this machine: the server must not take the port the hub forwards from,
# so the client's default misc (port, ip) is not sent and the outpost picks a free port.
c.OutpostSpawner.custom_misc_disable_default = True
"""


@pytest.fixture(scope="module", autouse=True)
def close_masters(hub: Hub, ssh_files: SSHClientFiles) -> Iterator[None]:
    """Torn down before the hub, so the hub's orphan check sees no ssh master left."""
    yield
    ssh_files.exit_masters()


def reaches_notebook(hub: Hub, user: str, name: str = "") -> bool:
    """Whether /api/status of the real jupyter_server answers through the hub's proxy."""
    response = hub.proxied(user, name, "api/status")
    json_reply = response.headers.get("content-type", "").startswith("application/json")
    return response.status_code == 200 and json_reply and "kernels" in response.json()


def forward_target(hub: Hub, user: str, name: str = "") -> str:
    """The server's address on the outpost, which the hub forwards its own local port to."""
    state = (hub.server(user, name) or {})["state"]
    assert isinstance(state, dict)
    address = str(state["port_forward_info"]["service"]).removeprefix("http://")
    assert address.startswith("127.0.0.1:") and address != f"127.0.0.1:{state['custom_port']}", state
    return address


def forwarded_to(daemon: StandaloneDaemon, address: str) -> bool:
    return f"forward opened hub={HUB_CREDENTIAL} " in daemon.proc.text() and f"dest={address} " in daemon.proc.text()


def test_tunnel_is_recreated_after_a_daemon_restart(
    hub: Hub, outpost: Outpost, sshd: StandaloneDaemon, ssh_files: SSHClientFiles
) -> None:
    """Sync start through the tunnel; the daemon stops (the notebook is unreachable) and starts
    again: its setup-tunnel call makes the hub rebuild the forward, with the same host key."""
    user = "grace"
    hub.create_user(user)
    ready = hub.start(user)
    progress(f"MEASURED start-to-ready (default server, sync, through the SSH tunnel): {ready:.2f}s")
    assert reaches_notebook(hub, user)
    address = forward_target(hub, user)
    wait_until("the daemon's log line of the forward", lambda: forwarded_to(sshd, address), 5)
    host_key = asyncssh.read_private_key(outpost.data_dir / "ssh_host_key").export_public_key().decode()
    pinned = ssh_files.known_hosts.read_text()
    assert len(pinned.splitlines()) == 1 and host_key.split()[1] in pinned, (pinned, host_key)

    sshd.stop()  # every tunnel through it dies with it
    wait_until("the proxied request to fail without the daemon", lambda: not reaches_notebook(hub, user), 20)

    sshd.start()
    wait_until(
        "the restarted daemon to ask the hub for the tunnel",
        lambda: "tunnel recreation requested" in sshd.proc.text(), 20,
    )  # fmt: skip
    wait_until("the notebook to be reachable again through the new tunnel", lambda: reaches_notebook(hub, user), 30)
    assert forwarded_to(sshd, address)
    # The persisted host key was offered again and accepted: the pinned entry did not change.
    assert ssh_files.known_hosts.read_text() == pinned

    hub.stop(user)
    assert [s for s in outpost.services() if s["name"] == ""] == []


def test_async_start_is_tunnelled_by_the_setup_tunnel_call(hub: Hub, outpost: Outpost, sshd: StandaloneDaemon) -> None:
    """The outpost answers 202, starts in the background, then POSTs the address to the hub's
    setup-tunnel API; only that makes the hub open the forward it is waiting behind."""
    user = "ivan"
    hub.create_user(user)
    ready = hub.start(user, "async")
    progress(f"MEASURED start-to-ready (named server, async, through the SSH tunnel): {ready:.2f}s")
    assert "e2ehub/async/" in outpost.proc.text() and "(async)" in outpost.proc.text()
    assert reaches_notebook(hub, user, "async")
    address = forward_target(hub, user, "async")
    assert forwarded_to(sshd, address)
    assert f"{user}:async - APICall: SetupTunnel" in hub.proc.text()

    hub.stop(user, "async")
    assert [s for s in outpost.services() if s["name"] == "async"] == []


def test_tunnel_through_the_daemon_of_outpost_dev(hub: Hub, outpost: Outpost) -> None:
    """The daemon `outpost dev` starts on --ssh-port carries the hub's tunnel."""
    user = "heidi"
    hub.create_user(user)
    ready = hub.start(user, "viadev")
    progress(f"MEASURED start-to-ready (named server, through outpost dev's SSH daemon): {ready:.2f}s")
    assert reaches_notebook(hub, user, "viadev")
    address = forward_target(hub, user, "viadev")
    assert f"dest={address}" in outpost.proc.text()
    hub.stop(user, "viadev")
    assert [s for s in outpost.services() if s["name"] == "viadev"] == []

"""No restart stops a running server: `outpost dev --keep-servers`, `--rotate-key` and a start of the SSH
daemon, with a hub that reaches its servers directly (the default) and with one that tunnels to them
through `outpost dev`'s daemon (`ssh_during_startup`). The daemon asks the hub to rebuild a tunnel only
where one existed: a hub without SSH would answer 400 to that call and stop the user's server."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.harness import HUB_CREDENTIAL, Hub, Outpost, SSHClientFiles
from tests.e2e.processes import free_port, progress, wait_until

pytestmark = pytest.mark.e2e

DIRECT, TUNNELLED = "direct", "tunnelled"
SUMMARY = re.compile(r"tunnel recreation done posted=(\d+) failed=(\d+)")


@pytest.fixture(scope="module", params=[DIRECT, TUNNELLED])
def setup(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory, setup: str) -> Path:
    return tmp_path_factory.mktemp(f"restarts-{setup}")


@pytest.fixture(scope="module")
def outpost(e2e_dir: Path, marker: str, ssh_files: SSHClientFiles) -> Iterator[Outpost]:
    """`outpost dev --keep-servers` with the key it keeps in its data directory (so --rotate-key can rotate it)."""
    config = harness.outpost_values(e2e_dir, sshPublicKeys=[{"hub": HUB_CREDENTIAL, "key": ssh_files.public}])
    running = harness.start_outpost(e2e_dir, marker, config=config, generated_key=True, extra_args=["--keep-servers"])
    yield running
    harness.stop_outpost(running)


@pytest.fixture(scope="module")
def hub_extra_config(setup: str, ssh_files: SSHClientFiles, outpost: Outpost) -> str:
    if setup == DIRECT:
        return ""  # the printed snippet as it is: no SSH
    return harness.tunnelled_hub_config(ssh_files, outpost.ssh_port)


@pytest.fixture(scope="module", autouse=True)
def close_masters(hub: Hub, ssh_files: SSHClientFiles) -> Iterator[None]:
    """Torn down before the hub, so the hub's orphan check sees no ssh master left."""
    yield
    ssh_files.exit_masters()


def reaches_notebook(hub: Hub, user: str) -> bool:
    response = hub.proxied(user, "", "api/status")
    return response.status_code == 200 and "kernels" in response.json()


def started(hub: Hub, user: str) -> str:
    """A default server started through the hub and reached through its proxy; its start_id."""
    hub.create_user(user)
    hub.start(user)
    assert reaches_notebook(hub, user)
    state = (hub.server(user) or {})["state"]
    assert isinstance(state, dict)
    return str(state["start_id"])


def recreation_summary(log: str) -> tuple[int, int]:
    """(posted, failed) of the daemon's "tunnel recreation done" line in `log`."""
    found = SUMMARY.search(log)
    return (int(found[1]), int(found[2])) if found else (-1, -1)


def assert_still_running(hub: Hub, outpost: Outpost, user: str, start_id: str, log: str, setup: str) -> None:
    """After the daemon's recreation is done: the hub still has the server, it answers through the proxy,
    the outpost polls it as running; the hub was asked to rebuild exactly the tunnel it had."""
    posted, failed = recreation_summary(log)
    assert failed == 0, log
    asked = f"tunnel recreation requested service={HUB_CREDENTIAL}/<default>/{start_id}" in log
    assert asked == (setup == TUNNELLED), log
    assert posted == int(setup == TUNNELLED)
    server = hub.server(user)
    assert server is not None and server["ready"], server
    assert "SetupTunnel - but spawner is already stopping" not in hub.proc.text()
    with outpost.client() as api:
        assert api.get(f"/services//{start_id}").json() == {"status": None}
    wait_until("the notebook through the hub's proxy", lambda: reaches_notebook(hub, user), 30)
    hub.stop(user)


@pytest.mark.parametrize("extra_args", [[], ["--rotate-key"]], ids=["keep-servers", "rotate-key"])
def test_a_restart_of_outpost_dev_keeps_the_server(
    hub: Hub, outpost: Outpost, e2e_dir: Path, setup: str, extra_args: list[str]
) -> None:
    """`outpost dev --keep-servers` stops and starts again (the hub's tunnels through its daemon die with it)."""
    user = f"keeper{len(extra_args)}"
    start_id = started(hub, user)
    log_name = f"outpost-dev-{user}.log"
    harness.restart_keeping_servers(e2e_dir, outpost, log_name, extra_args)
    log = wait_until(
        "the restarted daemon's tunnel recreation",
        lambda: SUMMARY.search(outpost.proc.text()) and outpost.proc.text(),
        60,
    )
    progress(f"recreation after the restart: {SUMMARY.search(log)[0]}")  # type: ignore[index]
    assert_still_running(hub, outpost, user, start_id, log, setup)


def test_a_start_of_the_ssh_daemon_keeps_the_server(hub: Hub, outpost: Outpost, e2e_dir: Path, setup: str) -> None:
    """`python -m sshd` starting against the same Redis (a rollout of the chart's daemon) recreates only the
    tunnels that existed; the hub's tunnel through outpost dev's daemon is rebuilt, and nothing stops."""
    user = "rollout"
    start_id = started(hub, user)
    daemon = harness.start_sshd(outpost, e2e_dir, free_port(), log_name=f"sshd-{user}.log")
    try:
        log = wait_until("the daemon's tunnel recreation", lambda: SUMMARY.search(daemon.text()) and daemon.text(), 60)
        assert_still_running(hub, outpost, user, start_id, log, setup)
    finally:
        daemon.stop(signal.SIGTERM)

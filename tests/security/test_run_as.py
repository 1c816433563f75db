"""Servers of an outpost running as root (as CI runs it) run unprivileged: `outpost dev` gives each hub a uid
of its own when such a uid can run the command (tests/security/test_hub_uids.py: what that isolates), or
`run_as` names one user for all; each server gets its own home, and what the outpost relies on (server.json,
the output log, the exit status) stays out of the server's reach. Where no unprivileged uid can run the
command, `outpost dev` runs servers as root with --allow-root, and says so once."""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost.backends.local import default_home_root
from outpost.backends.privileges import DEV_UID_RANGE, parse_uid_range
from tests.conftest import TINY_SERVER
from tests.e2e.processes import wait_until
from tests.security.servers import can, identity, mode, processes, server_state
from tests.security.stack import Stack, launch, shut_down, start_body

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="servers change user only under a root outpost, as in CI")

NOBODY = pwd.getpwnam("nobody")
FALLBACK_WARNING = "WARNING: outpost dev runs as root, and an unprivileged uid cannot use"


def body(name: str, user: str = "alice", **extra: Any) -> dict[str, Any]:
    started = start_body(name=name, user=user, **extra)
    started["misc"] = {}
    return started


def server_uid(stack: Stack, name: str, hub: str = "hubA") -> int:
    _, server = processes(server_state(stack, name, hub))
    return int(identity(server)["Uid"][0])


def test_servers_run_unprivileged_each_with_its_own_home(clean: Stack) -> None:
    for hub in ("hubA", "hubB"):
        assert clean.start(hub, body("who")).status_code == 200
    homes = []
    for hub in ("hubA", "hubB"):
        wrapper, server = processes(server_state(clean, "who", hub))
        uid = int(identity(server)["Uid"][0])
        assert uid in parse_uid_range(DEV_UID_RANGE)
        for process in (wrapper, server):
            assert identity(process) == {"Uid": [str(uid)] * 4, "Gid": [str(uid)] * 4, "Groups": []}
        home = Path(server.environ()["HOME"])
        assert home.is_relative_to(default_home_root(clean.data_dir)) and server.cwd() == str(home)
        assert mode(home) == 0o700 and home.stat().st_uid == uid
        assert can(uid, uid, "-w", home)
        homes.append(home)
    assert homes[0] != homes[1]  # one home per hub and user: alice of hubA never loads hubB's alice's files
    hub_homes = homes[0].parent  # the hub's own: its uid's alone
    assert mode(hub_homes) == 0o700 and hub_homes.stat().st_uid == server_uid(clean, "who")


def test_what_the_outpost_relies_on_is_out_of_the_server_s_reach(clean: Stack) -> None:
    assert clean.start("hubA", body("reach")).status_code == 200
    state = server_state(clean, "reach")
    uid = server_uid(clean, "reach")
    workdir = Path(state["dir"])
    assert mode(clean.data_dir) == 0o700 and mode(workdir) == 0o700 and workdir.stat().st_uid == 0
    for path in (workdir, workdir / "server.json", workdir / "output.log", workdir / "exit_code"):
        assert path.exists() and not can(uid, uid, "-w", path) and not can(uid, uid, "-e", path)
    # The server's descriptors: no way to the exit-code file (its stdin is /dev/null).
    _, server = processes(state)
    assert os.readlink(f"/proc/{server.pid}/fd/0") == "/dev/null"
    assert not any(Path(f.path).name == "exit_code" for f in server.open_files())


def test_the_exit_status_is_still_recorded(clean: Stack) -> None:
    assert clean.start("hubA", body("exits")).status_code == 200
    state = server_state(clean, "exits")
    _, server = processes(state)
    server.send_signal(signal.SIGTERM)

    def status() -> Any:
        with clean.api("hubA") as api:
            return api.get("/services/exits/1").json()["status"]

    assert wait_until("the poll to see the exit", status, 15) == 128 + signal.SIGTERM
    assert (Path(state["dir"]) / "exit_code").read_text().strip() == str(128 + signal.SIGTERM)


def test_certificate_files_are_the_server_user_s_alone_and_go_with_the_server(clean: Stack) -> None:
    certs = {"keyfile": "KEY " + secrets.token_hex(8), "certfile": "CERT", "cafile": "CA"}
    response = clean.start("hubA", body("tls", certs=certs))
    assert response.status_code == 200 and response.json()["service"].startswith("https://")
    _, server = processes(server_state(clean, "tls"))
    keyfile = Path(server.environ()["JUPYTERHUB_SSL_KEYFILE"])
    assert keyfile.is_relative_to(default_home_root(clean.data_dir)) and keyfile.read_text() == certs["keyfile"]
    uid = server_uid(clean, "tls")
    for path in (keyfile, keyfile.parent):
        assert path.stat().st_uid == uid and mode(path) == (0o700 if path.is_dir() else 0o600)
    assert can(uid, uid, "-r", keyfile)
    assert clean.stop("hubA", "tls").status_code == 200
    assert not keyfile.parent.exists()


def test_a_hub_never_chooses_who_its_server_runs_as(clean: Stack) -> None:
    for misc in ({"run_as": "root"}, {"uid_range": "1000-1000"}, {"home_root": str(clean.data_dir)}):
        response = clean.start("hubB", {**body("root"), "misc": misc})
        assert response.status_code == 419 and response.json()["class"] == "OverrideNotAllowed", response.text
    assert clean.record_keys() == set()


@pytest.fixture(scope="module")
def venv_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`outpost dev` with the venv's python (under /root, which no unprivileged uid can enter), over a data
    directory that an earlier run (or a hand) left 0755."""
    tmp = tmp_path_factory.mktemp("run-as-root")
    (tmp / "outpost-data").mkdir(mode=0o755)
    (tmp / "outpost-data").chmod(0o755)
    lines = f"c.LocalProcessBackend.cmd = [{sys.executable!r}, {str(TINY_SERVER)!r}]\n"
    running = launch(tmp, f"security-root-{secrets.token_hex(4)}", backend_lines=lines)
    yield running
    shut_down(running)


def test_outpost_dev_falls_back_to_root_with_allow_root_and_says_why_once(venv_stack: Stack) -> None:
    assert mode(venv_stack.data_dir) == 0o700
    for name in ("first", "second"):
        assert venv_stack.start("hubA", body(name)).status_code == 200
    wrapper, server = processes(server_state(venv_stack, "first"))
    assert identity(server)["Uid"] == ["0"] * 4 and server.cmdline()[-1] == "--allow-root"
    home = Path(server.environ()["HOME"])
    assert home.is_relative_to(venv_stack.data_dir / "servers" / "home") and mode(home) == 0o700
    log = venv_stack.log()
    assert log.count(FALLBACK_WARNING) == 1, log
    warning = next(line for line in log.splitlines() if FALLBACK_WARNING in line)
    assert "servers run AS ROOT (with --allow-root)" in warning and "c.LocalProcessBackend.run_as" in warning
    venv_stack.stop_all()


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`outpost dev` whose administrator names one user for every server."""
    tmp = tmp_path_factory.mktemp("run-as-nobody")
    running = launch(
        tmp, f"security-nobody-{secrets.token_hex(4)}", backend_lines='c.LocalProcessBackend.run_as = "nobody"\n'
    )
    yield running
    shut_down(running)


def test_run_as_names_one_user_for_every_hub_s_servers(shared_stack: Stack) -> None:
    for hub in ("hubA", "hubB"):
        assert shared_stack.start(hub, body("one")).status_code == 200
        assert server_uid(shared_stack, "one", hub) == NOBODY.pw_uid
    assert "servers run as 'nobody' (c.LocalProcessBackend.run_as)" in shared_stack.log()
    hub_homes = Path(processes(server_state(shared_stack, "one"))[1].environ()["HOME"]).parent
    assert mode(hub_homes) == 0o711  # passable by the one user, listable by none
    shared_stack.stop_all()

"""Servers of an outpost running as root (as CI runs it) run unprivileged: `outpost dev` picks `nobody`
when it can run the command, each server gets its own home, and what the outpost relies on (server.json,
the output log, the exit status) stays out of the server's reach. Where `nobody` cannot run the command,
`outpost dev` runs servers as root with --allow-root, and says so once."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from outpost.backends.local import default_home_root
from tests.conftest import TINY_SERVER
from tests.e2e.processes import wait_until
from tests.security.stack import Stack, launch, shut_down, start_body

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="servers change user only under a root outpost, as in CI")

NOBODY = pwd.getpwnam("nobody")
FALLBACK_WARNING = "WARNING: outpost dev runs as root, and the user 'nobody' cannot use"


def body(name: str, user: str = "alice", **extra: Any) -> dict[str, Any]:
    started = start_body(name=name, user=user, **extra)
    started["misc"] = {}
    return started


def server_state(stack: Stack, name: str, hub: str = "hubA") -> dict[str, Any]:
    """The reconciler's identity file of a running server, read as the outpost reads it."""
    for marker in (stack.data_dir / "servers").glob("*/server.json"):
        state: dict[str, Any] = json.loads(marker.read_text())
        if state["service"] == {"hub": hub, "name": name, "start_id": "1"}:
            return state
    raise AssertionError(f"no server.json for {hub}/{name}")


def processes(state: dict[str, Any]) -> tuple[psutil.Process, psutil.Process]:
    """The `sh` wrapper the outpost started and the server command under it."""
    wrapper = psutil.Process(state["pid"])
    return wrapper, wait_until("the server under its wrapper", lambda: next(iter(wrapper.children()), None), 10)


def identity(process: psutil.Process) -> dict[str, list[str]]:
    """Real, effective, saved and filesystem uids and gids, and the supplementary groups, from /proc."""
    status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {key: fields[key].split() for key in ("Uid", "Gid", "Groups")}


def nobody_can(test: str, path: Path) -> bool:
    """`test <flag> <path>` run as nobody: what the server's user can do to that path."""
    return (
        subprocess.run(["test", test, str(path)], user=NOBODY.pw_uid, group=NOBODY.pw_gid, extra_groups=[]).returncode
        == 0
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_servers_run_as_nobody_each_with_its_own_home(clean: Stack) -> None:
    for hub in ("hubA", "hubB"):
        assert clean.start(hub, body("who")).status_code == 200
    homes = []
    for hub in ("hubA", "hubB"):
        wrapper, server = processes(server_state(clean, "who", hub))
        for process in (wrapper, server):
            assert identity(process) == {
                "Uid": [str(NOBODY.pw_uid)] * 4, "Gid": [str(NOBODY.pw_gid)] * 4, "Groups": [],
            }  # fmt: skip
        home = Path(server.environ()["HOME"])
        assert home.is_relative_to(default_home_root(clean.data_dir)) and server.cwd() == str(home)
        assert mode(home) == 0o700 and home.stat().st_uid == NOBODY.pw_uid
        assert nobody_can("-w", home)
        homes.append(home)
    assert homes[0] != homes[1]  # one home per hub and user: alice of hubA never loads hubB's alice's files
    hub_homes = homes[0].parent  # the server passes through to its home, and lists no one else's
    assert mode(hub_homes) == 0o711 and nobody_can("-x", hub_homes) and not nobody_can("-r", hub_homes)


def test_what_the_outpost_relies_on_is_out_of_the_server_s_reach(clean: Stack) -> None:
    assert clean.start("hubA", body("reach")).status_code == 200
    state = server_state(clean, "reach")
    workdir = Path(state["dir"])
    assert mode(clean.data_dir) == 0o700 and mode(workdir) == 0o700 and workdir.stat().st_uid == 0
    for path in (workdir, workdir / "server.json", workdir / "output.log", workdir / "exit_code"):
        assert path.exists() and not nobody_can("-w", path) and not nobody_can("-e", path)
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
    for path in (keyfile, keyfile.parent):
        assert path.stat().st_uid == NOBODY.pw_uid and mode(path) == (0o700 if path.is_dir() else 0o600)
    assert nobody_can("-r", keyfile)
    assert clean.stop("hubA", "tls").status_code == 200
    assert not keyfile.parent.exists()


def test_a_hub_never_chooses_who_its_server_runs_as(clean: Stack) -> None:
    for misc in ({"run_as": "root"}, {"home_root": str(clean.data_dir)}):
        response = clean.start("hubB", {**body("root"), "misc": misc})
        assert response.status_code == 419 and response.json()["class"] == "OverrideNotAllowed", response.text
    assert clean.record_keys() == set()


@pytest.fixture(scope="module")
def venv_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`outpost dev` with the venv's python (under /root, which nobody cannot enter), over a data
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

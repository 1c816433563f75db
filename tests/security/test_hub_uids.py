"""Issue 23, attack 3: a hub's notebook goes after another hub's server on the same machine. Under a root
`outpost dev` every hub's servers ran as `nobody`, so hub A's notebook read hub B's JUPYTERHUB_API_TOKEN from
/proc/<pid>/environ, could signal B's server and wrote into B's home (its path is a computable hash). Now each
hub's servers run as a uid and gid of the hub's own (`c.LocalProcessBackend.uid_range`), and the kernel says
no to each of these. Every attack below is run as the uid hub A's server runs as, as its notebook would."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from outpost.backends.privileges import DEV_UID_RANGE, parse_uid_range
from tests.security.servers import identity, mode, processes, run_as, server_state
from tests.security.stack import Stack, start_body

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="servers change user only under a root outpost, as in CI")


def body(name: str, user: str = "alice", **extra: Any) -> dict[str, Any]:
    started = start_body(name=name, user=user, **extra)
    started["misc"] = {}
    return started


def server(stack: Stack, hub: str, name: str) -> tuple[int, int, dict[str, str]]:
    """The server's pid, its uid (all four of /proc's, and its gid the same) and its environment."""
    _, process = processes(server_state(stack, name, hub))
    ids = identity(process)
    uid = int(ids["Uid"][0])
    assert ids == {"Uid": [str(uid)] * 4, "Gid": [str(uid)] * 4, "Groups": []}
    return process.pid, uid, process.environ()


def test_each_hub_s_servers_run_as_a_uid_of_the_hub_s_own(clean: Stack) -> None:
    for hub, name, user in (("hubA", "one", "alice"), ("hubA", "two", "bob"), ("hubB", "one", "alice")):
        assert clean.start(hub, body(name, user)).status_code == 200
    _, a_one, _ = server(clean, "hubA", "one")
    _, a_two, _ = server(clean, "hubA", "two")
    _, b_one, _ = server(clean, "hubB", "one")
    assert a_one == a_two != b_one  # one uid per hub, whichever of its users
    assert {a_one, b_one} <= set(parse_uid_range(DEV_UID_RANGE))
    with clean.redis() as client:  # kept in the store: every outpost process gives a hub the same uid
        assert client.hgetall("outpost:uids") == {b"hubA": str(a_one).encode(), b"hubB": str(b_one).encode()}


def test_a_hub_s_notebook_cannot_read_signal_or_write_another_hub_s_server(clean: Stack) -> None:
    certs = {"keyfile": "KEY " + secrets.token_hex(8), "certfile": "CERT", "cafile": "CA"}
    assert clean.start("hubA", body("attacker")).status_code == 200
    assert clean.start("hubB", body("victim", certs=certs)).status_code == 200
    _, attacker, _ = server(clean, "hubA", "attacker")
    victim_pid, victim, victim_env = server(clean, "hubB", "victim")
    token = victim_env["JUPYTERHUB_API_TOKEN"]
    home = Path(victim_env["HOME"])
    planted = home / ".jupyter"

    read = run_as(attacker, attacker, "cat", f"/proc/{victim_pid}/environ")
    assert read.returncode != 0 and token not in read.stdout
    signal = run_as(attacker, attacker, "kill", "-0", str(victim_pid))
    assert signal.returncode != 0 and "not permitted" in signal.stderr
    for path in (home, home.parent):  # its home, and the hub's directory of homes (names are hashes anyone computes)
        assert run_as(attacker, attacker, "touch", str(path / "planted")).returncode != 0
        assert run_as(attacker, attacker, "ls", str(path)).returncode != 0
    assert run_as(attacker, attacker, "mkdir", str(planted)).returncode != 0 and not planted.exists()
    keyfile = victim_env["JUPYTERHUB_SSL_KEYFILE"]
    assert run_as(attacker, attacker, "cat", keyfile).returncode != 0
    assert mode(Path(keyfile)) == 0o600 and mode(home) == mode(home.parent) == 0o700

    # The checks can fail: the victim's own uid does each of these.
    assert token in run_as(victim, victim, "cat", f"/proc/{victim_pid}/environ").stdout
    assert run_as(victim, victim, "kill", "-0", str(victim_pid)).returncode == 0
    assert run_as(victim, victim, "cat", keyfile).stdout == certs["keyfile"]
    assert run_as(victim, victim, "touch", str(home / "mine")).returncode == 0

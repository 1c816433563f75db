"""The local-process backend with real child processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from traitlets.config import Config

from outpost.backends import local
from outpost.backends.base import StartSpec
from outpost.backends.local import (
    LocalBackend,
    _create_time,
    _live_in_group_from_proc,
    _live_in_group_from_psutil,
    _running_from_proc,
    _running_from_psutil,
)
from outpost.backends.sockets import _proc_listeners
from outpost.errors import AddressTaken, BackendError, InvalidBody, OverrideNotAllowed
from outpost.models import ServiceId
from tests.conftest import OWN_USER, TINY_SERVER
from tests.e2e.processes import group_members, wait_until
from tests.sshd.helpers import until
from tests.support.recorder import Recorder

pytestmark = pytest.mark.asyncio(loop_scope="session")


def make_backend(tmp_path: Path, **options: Any) -> LocalBackend:
    config = Config()
    config.LocalProcessBackend.cmd = [sys.executable, str(TINY_SERVER)]
    config.LocalProcessBackend.start_timeout = 20.0
    config.LocalProcessBackend.stop_timeout = 1.0
    config.LocalProcessBackend.run_as = OWN_USER
    for key, value in options.items():
        setattr(config.LocalProcessBackend, key, value)
    return LocalBackend(config, tmp_path)


def spec(misc: dict[str, Any] | None = None, name: str = "srv", **env: str) -> StartSpec:
    return StartSpec(
        sid=ServiceId("hub", name, "1"),
        env={"JUPYTERHUB_USER": "alice", "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/", **env},
        misc=misc or {},
    )


async def test_start_poll_stop_and_resume_in_a_fresh_backend(tmp_path: Path) -> None:
    recorder = Recorder()
    started = await make_backend(tmp_path).start(spec(), recorder.save, recorder.report)
    assert recorder.states == [started.state] and recorder.progress[0][0] == 50
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{started.address}/user/alice/")).json()["user"] == "alice"
    stored = json.loads(json.dumps(started.state))  # what Redis gives back, in another process
    fresh = make_backend(tmp_path)
    assert await fresh.poll(stored) is None
    pid = stored["pid"]
    children = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    await fresh.stop(stored)
    assert await fresh.poll(stored) is not None
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in children)
    await fresh.stop(stored)  # stopping again is not an error


async def test_exit_code_is_reported_to_any_poller(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, env={"TINY_EXIT_CODE": "0"})
    with pytest.raises(BackendError, match="exited with code 0"):
        await backend.start(spec(), Recorder().save, Recorder().report)
    recorder = Recorder()
    started = await make_backend(tmp_path).start(spec(), recorder.save, recorder.report)
    server = psutil.Process(started.state["pid"]).children()
    for child in server:
        child.terminate()
    psutil.wait_procs(server, timeout=5)
    for _ in range(200):
        if await make_backend(tmp_path).poll(started.state) is not None:
            break
        await asyncio.sleep(0.02)
    assert await make_backend(tmp_path).poll(started.state) == 143  # 128 + SIGTERM, recorded by sh
    await make_backend(tmp_path).stop(started.state)


async def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    recorder = Recorder()
    backend = make_backend(tmp_path, env={"TINY_IGNORE_SIGTERM": "1"})
    started = await backend.start(spec(), recorder.save, recorder.report)
    server = psutil.Process(started.state["pid"]).children()[0]
    await backend.stop(started.state)
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE


async def test_pid_reuse_is_not_mistaken_for_the_server(tmp_path: Path) -> None:
    started = await make_backend(tmp_path).start(spec(), Recorder().save, Recorder().report)
    impostor = {**started.state, "create_time": started.state["create_time"] - 1000}
    assert await make_backend(tmp_path).poll(impostor) == 1
    await make_backend(tmp_path).stop(impostor)  # must not kill the real server
    assert await make_backend(tmp_path).poll(started.state) is None
    await make_backend(tmp_path).stop(started.state)


@pytest.mark.parametrize("running", [_running_from_proc, _running_from_psutil], ids=["proc", "psutil"])
async def test_a_zombie_or_a_reused_pid_is_not_a_running_server(running: Callable[[int, float], bool]) -> None:
    """Both ways of asking agree with the start time psutil stored, and a zombie is gone."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    create_time = psutil.Process(child.pid).create_time()
    assert running(child.pid, create_time)
    assert not running(child.pid, create_time - 1000)  # the pid, but another process's start time
    assert child.stdin is not None
    child.stdin.close()
    for _ in range(200):  # not reaped: it stays a zombie until wait()
        if psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.02)
    assert not running(child.pid, create_time)
    child.wait()
    assert not running(child.pid, create_time)


async def test_creation_time_is_the_one_psutil_reports() -> None:
    """States store this time; pollers compare it with what psutil or /proc says later."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert abs(_create_time(child.pid) - psutil.Process(child.pid).create_time()) <= 0.01
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    "live_in_group", [_live_in_group_from_proc, _live_in_group_from_psutil], ids=["proc", "psutil"]
)
async def test_a_group_of_only_zombies_has_no_live_member(live_in_group: Callable[[int], bool]) -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, start_new_session=True
    )
    assert live_in_group(leader.pid)
    assert leader.stdin is not None
    leader.stdin.close()
    for _ in range(200):  # not reaped: a zombie, still in its group
        if psutil.Process(leader.pid).status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.02)
    assert not live_in_group(leader.pid)
    leader.wait()
    assert not live_in_group(leader.pid)


async def test_an_ended_server_is_reaped_by_the_process_that_started_it(tmp_path: Path) -> None:
    started = await make_backend(tmp_path).start(spec(), Recorder().save, Recorder().report)
    pid = started.state["pid"]
    os.killpg(pid, signal.SIGKILL)
    for _ in range(250):  # the event loop collects it: no zombie is left behind
        if not psutil.pid_exists(pid):
            break
        await asyncio.sleep(0.02)
    assert not psutil.pid_exists(pid)
    await make_backend(tmp_path).stop(started.state)


async def test_misc_overrides_options_and_bad_types_are_rejected(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    plain = await backend.start(spec(name="plain"), Recorder().save, Recorder().report)  # the defaults
    started = await backend.start(
        spec({"env": {"MEM_LIMIT": "5G"}, "unrelated": 1}), Recorder().save, Recorder().report
    )
    after = await backend.start(spec({"unrelated": 1}, name="after"), Recorder().save, Recorder().report)
    async with httpx.AsyncClient() as client:
        assert (await client.get(started.address)).json()["limits"] == {"MEM_LIMIT": "5G"}
        for unchanged in (plain, after):  # one start's overrides never reach another's options
            assert (await client.get(unchanged.address)).json()["limits"] == {}
    for server in (plain, started, after):
        await backend.stop(server.state)
    with pytest.raises(InvalidBody):
        await backend.start(spec({"port": "not a port"}), Recorder().save, Recorder().report)


async def test_missing_command_is_a_backend_error_that_says_why(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, cmd=["/nonexistent/jupyterhub-singleuser"])
    with pytest.raises(BackendError, match="exited with code 127") as failure:
        await backend.start(spec(), Recorder().save, Recorder().report)
    assert failure.value.message.endswith("/nonexistent/jupyterhub-singleuser: not found")


async def test_failed_starts_keep_their_output_up_to_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "KEPT_FAILED_STARTS", 2)
    backend = make_backend(tmp_path, env={"TINY_EXIT_CODE": "5"})
    for name in ("one", "two", "three"):
        with pytest.raises(BackendError, match="code 5 before it was ready. Its last output:\nexiting on purpose$"):
            await backend.start(spec(name=name), Recorder().save, Recorder().report)
    kept = list((tmp_path / "servers" / "failed").iterdir())
    assert len(kept) == 2 and all((d / "exit_code").read_text().strip() == "5" for d in kept)
    assert [d.name for d in (tmp_path / "servers").iterdir() if d.name != "failed"] == ["home"]


async def test_logs_hold_the_servers_output(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    started = await backend.start(spec(), Recorder().save, Recorder().report)
    assert any("tiny server for alice" in line for line in await backend.logs(started.state))
    await backend.stop(started.state)
    assert await backend.logs(started.state) == []


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended, not collected yet
    except psutil.NoSuchProcess:
        return True


def listener(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket of this test's process, so of no server's process group."""
    sock = socket.socket()
    sock.bind((host, port))
    sock.listen()
    return sock


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_a_port_another_process_listens_on_is_refused_and_nothing_is_left(tmp_path: Path, host: str) -> None:
    backend = make_backend(tmp_path)
    recorder = Recorder()
    with listener(host) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(AddressTaken, match=re.escape(f"The address 127.0.0.1:{port} is already in use")):
            await backend.start(spec({"port": port}), recorder.save, recorder.report)
    assert await backend.running() == []  # the server it started is stopped, its directory gone
    assert recorder.states and not Path(recorder.states[0]["dir"]).exists()
    assert gone(recorder.states[0]["pid"])


async def test_a_listener_that_comes_while_the_server_starts_is_refused(tmp_path: Path) -> None:
    with listener() as probe:
        port = probe.getsockname()[1]
    backend = make_backend(tmp_path, env={"TINY_DELAY": "30"})  # the server would listen only after 30 s
    recorder = Recorder()
    starting = asyncio.create_task(backend.start(spec({"port": port}), recorder.save, recorder.report))
    await until(lambda: bool(recorder.states), 10, "the server's state")
    with listener(port=port):
        with pytest.raises(AddressTaken):
            await asyncio.wait_for(starting, 10)
    assert await backend.running() == []


@pytest.mark.parametrize(
    ("allowed", "misc", "bound"),
    [
        (None, {"ip": "0.0.0.0"}, "127.0.0.1"),  # what the OutpostSpawner sends: ignored, not refused
        (None, {"ip": "10.11.12.13"}, "127.0.0.1"),
        (["127.0.0.1", "0.0.0.0"], {"ip": "0.0.0.0"}, "0.0.0.0"),
        (["127.0.0.1", "0.0.0.0"], {}, "127.0.0.1"),
    ],
)
async def test_the_bind_address_is_the_administrators(
    tmp_path: Path, allowed: list[str] | None, misc: dict[str, Any], bound: str
) -> None:
    backend = make_backend(tmp_path, **({"allowed_ips": allowed} if allowed else {}))
    started = await backend.start(spec(misc), Recorder().save, Recorder().report)
    try:
        assert started.address == f"http://127.0.0.1:{started.state['port']}"
        listening = {str(address) for address, _ in _proc_listeners(started.state["port"])}
        assert listening == {bound}
        server = psutil.Process(started.state["pid"]).children()[0]
        assert server.environ()["JUPYTERHUB_SERVICE_URL"].startswith(f"http://{bound}:")
    finally:
        await backend.stop(started.state)


async def test_a_free_port_taken_before_the_server_binds_it_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of two starts handed the same free port: the loser starts again on another one."""
    picked: list[int] = []
    real_free_port = local._free_port
    with listener() as taken:

        def free_port(ip: str) -> int:
            picked.append(real_free_port(ip) if picked else taken.getsockname()[1])
            return picked[-1]

        monkeypatch.setattr(local, "_free_port", free_port)
        recorder = Recorder()
        started = await make_backend(tmp_path).start(spec(), recorder.save, recorder.report)
        assert started.state["port"] == picked[1] != picked[0]
        assert [state["port"] for state in recorder.states] == picked
        assert gone(recorder.states[0]["pid"])  # the first attempt's server is stopped
        await make_backend(tmp_path).stop(started.state)


async def test_a_hub_cannot_widen_the_addresses_its_misc_ip_may_choose(tmp_path: Path) -> None:
    with pytest.raises(OverrideNotAllowed, match="does not allow overriding: allowed_ips"):
        await make_backend(tmp_path).start(
            spec({"ip": "0.0.0.0", "allowed_ips": ["0.0.0.0"]}), Recorder().save, Recorder().report
        )
    assert await make_backend(tmp_path).running() == []


def under(path: Path) -> list[int]:
    """Live processes working in, or naming, a directory."""
    found = []
    for proc in psutil.process_iter(["cwd", "cmdline", "status"]):
        text = " ".join([proc.info["cwd"] or "", *(proc.info["cmdline"] or [])])
        if str(path) in text and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


async def kill_the_wrapper(state: dict[str, Any]) -> int:
    """kill -9 of the `sh` wrapper alone; answers the server's pid, which lives on."""
    [server] = psutil.Process(state["pid"]).children()
    os.kill(state["pid"], signal.SIGKILL)
    await until(lambda: gone(state["pid"]), 10, "the wrapper's end")
    assert server.is_running() and server.status() != psutil.STATUS_ZOMBIE
    return server.pid


async def test_a_server_whose_wrapper_was_killed_runs_until_stopped(tmp_path: Path) -> None:
    started = await make_backend(tmp_path).start(spec(), Recorder().save, Recorder().report)
    state = json.loads(json.dumps(started.state))
    server = await kill_the_wrapper(state)
    fresh = make_backend(tmp_path)  # another process, from the stored state
    assert await fresh.poll(state) is None
    async with httpx.AsyncClient() as client:  # it still serves
        assert (await client.get(started.address)).status_code == 200
    assert [sid for sid, _ in await fresh.running()] == [ServiceId("hub", "srv", "1")]  # the reconciler's view
    await fresh.stop(state)
    assert group_members(state["pid"]) == [] and gone(server)
    assert under(tmp_path) == [] and not Path(state["dir"]).exists()
    assert await fresh.poll(state) == 1 and await fresh.running() == []


async def test_the_identity_file_stays_while_a_process_of_the_group_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that outlives the stop (as one in uninterruptible sleep would: here SIGKILL is held back)
    keeps server.json, so the reconciler finds it; the next stop removes it once the group is gone."""
    backend = make_backend(tmp_path, env={"TINY_IGNORE_SIGTERM": "1"}, stop_timeout=0.1)
    started = await backend.start(spec(), Recorder().save, Recorder().report)
    server = await kill_the_wrapper(started.state)
    real_killpg = os.killpg
    monkeypatch.setattr(local, "KILL_WAIT", 0.1)
    monkeypatch.setattr(local.os, "killpg", lambda pgid, sig: real_killpg(pgid, 0 if sig == signal.SIGKILL else sig))
    await backend.stop(started.state)
    assert not gone(server) and (Path(started.state["dir"]) / "server.json").exists()
    assert [state["pid"] for _, state in await backend.running()] == [started.state["pid"]]
    monkeypatch.undo()
    await backend.stop(started.state)
    assert gone(server) and group_members(started.state["pid"]) == [] and not Path(started.state["dir"]).exists()


async def test_a_reused_group_id_is_not_the_server(tmp_path: Path) -> None:
    """A state whose leader start time is not that of the process with its pid: not running, never signalled."""
    started = await make_backend(tmp_path).start(spec(), Recorder().save, Recorder().report)
    await kill_the_wrapper(started.state)
    impostor = {**started.state, "create_time": started.state["create_time"] - 1000, "dir": str(tmp_path / "x")}
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)  # its own group, with a pid of its own
    try:
        other = {**impostor, "pid": sleeper.pid}
        assert await make_backend(tmp_path).poll(other) == 1
        await make_backend(tmp_path).stop(other)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert await make_backend(tmp_path).poll(started.state) is None
    await make_backend(tmp_path).stop(started.state)
    assert group_members(started.state["pid"]) == []


async def test_a_servers_processes_are_its_wrapper_and_descendants_first() -> None:
    """Readiness asks whose socket listens: the server's own tree is looked at before every process."""
    shell = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)
    try:
        child = wait_until("the shell's child", lambda: psutil.Process(shell.pid).children(), timeout=10)
        first = list(itertools.islice(local._server_processes(shell.pid), 2))
        assert first == [shell.pid, child[0].pid]
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()

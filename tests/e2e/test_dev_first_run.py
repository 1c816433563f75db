"""`outpost dev` as a newcomer meets it: stopping with an SSH connection open, a second start on the same
data directory, busy ports, a misspelled configuration, and the administrator's commands via its env file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.e2e import harness
from tests.e2e.harness import HUB_CREDENTIAL, Outpost
from tests.e2e.processes import VENV_BIN, base_env, free_port, marked_processes, wait_until
from tests.e2e.test_outpost_dev import start_tiny_servers

pytestmark = pytest.mark.e2e


def outpost_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`outpost ...` (the console script) to completion, output captured."""
    return subprocess.run(
        [str(VENV_BIN / "outpost"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def refused_start(tmp: Path, marker: str, *extra: str, api_port: int | None = None, ssh_port: int | None = None,
                  config: Path | None = None, env_extra: dict[str, str] | None = None,
                  ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """An `outpost dev` expected to refuse to start: it must exit on its own, and leave nothing running."""
    env = {**base_env(marker), **(env_extra or {})}
    env["HOME"] = str(harness.outpost_home(tmp))
    data_dir = tmp / "outpost-data"
    cmd = harness.outpost_command(data_dir, api_port or free_port(), ssh_port or free_port(), config)
    done = subprocess.run([*cmd, *extra], env=env, cwd=tmp, capture_output=True, text=True, timeout=60)
    assert not marked_processes(marker, []), "a refused start left a process behind"
    return done


def assert_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "", f"printed before failing:\n{done.stdout}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("outpost: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- stopping with an SSH connection open ---------------------------------------------------------


@pytest.fixture
def hub_key(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    if shutil.which("ssh") is None:
        pytest.fail("the OpenSSH client (ssh) is required: apt-get install openssh-client")
    key = asyncssh.generate_private_key("ssh-ed25519", comment="e2e-dev")
    path = tmp_path / "id_ed25519"
    key.write_private_key(path)
    path.chmod(0o600)
    yield path, key.export_public_key().decode().strip()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_with_an_ssh_connection_open(tmp_path: Path, hub_key: tuple[Path, str], sig: signal.Signals) -> None:
    """A real OpenSSH client holds a connection; the signal (Ctrl-C to the group for SIGINT) still stops
    everything, closes the client's connection, says bye and exits 0."""
    key, public = hub_key
    config = harness.outpost_values(tmp_path, sshPublicKeys=[{"hub": HUB_CREDENTIAL, "key": public}])
    outpost = harness.start_outpost(tmp_path, f"ssh-open-{tmp_path.name}", config=config)
    client_log = tmp_path / "ssh-client.log"
    with client_log.open("wb") as out:
        client = subprocess.Popen(
            ["ssh", "-v", "-N", "-p", str(outpost.ssh_port), "-i", str(key), "-oIdentitiesOnly=yes",
             "-oBatchMode=yes", "-oStrictHostKeyChecking=no", "-oUserKnownHostsFile=/dev/null",
             "-oControlPath=none", "jhuboutpost@127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        start_tiny_servers(outpost, ("",))
        wait_until("the ssh client to log in", lambda: "Authenticated to" in client_log.read_text(), timeout=20)
        code = outpost.proc.stop(sig, group=sig == signal.SIGINT)  # raises on any process left behind
        assert client.wait(timeout=20) is not None  # the daemon closed the connection
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if outpost.proc.popen.poll() is None:
            outpost.proc.stop(signal.SIGKILL)
    text = outpost.proc.text()
    assert code == 0, outpost.proc.tail()
    assert "SSH daemon stopped" in text and "stopped 1 server(s)" in text, outpost.proc.tail()
    assert text.rstrip().endswith("bye") and "Traceback" not in text, outpost.proc.tail()


# --- one owner per data directory, ports and configuration checked first -------------------------


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Outpost]:
    outpost = harness.start_outpost(tmp_path, f"first-run-{tmp_path.name}", config=harness.outpost_values(tmp_path))
    yield outpost
    harness.stop_outpost(outpost)


def test_second_outpost_on_the_same_data_dir_is_refused(tmp_path: Path, running: Outpost) -> None:
    done = refused_start(tmp_path, f"second-{tmp_path.name}")
    assert_one_line(done, f"PID {running.proc.pid}", str(running.data_dir), "--data-dir")
    assert running.services() == []  # the first one still serves, its Redis untouched


@pytest.mark.parametrize("which", ["api", "ssh"])
def test_busy_port_is_one_line_before_anything_is_printed(tmp_path: Path, which: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        ports = {"api_port": port} if which == "api" else {"ssh_port": port}
        done = refused_start(tmp_path, f"busy-{which}-{tmp_path.name}", **ports)
    assert_one_line(done, f"127.0.0.1:{port}", f"--{which}-port")
    assert not (tmp_path / "outpost-data" / "redis").exists()  # refused before Redis was started


def test_misspelled_setting_names_the_key_as_written(tmp_path: Path) -> None:
    config = tmp_path / "values.yaml"
    config.write_text("sshPublicKey: []\n")
    line = assert_one_line(refused_start(tmp_path, f"typo-{tmp_path.name}", config=config), "sshPublicKey")
    assert "did you mean sshPublicKeys?" in line and "ssh_public_key" not in line


def test_misindented_user_rule_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "values.yaml"
    config.write_text(
        "flavors:\n  small:\n    max: 1\n"
        "users:\n  alice:\n    authentication: {name: alice}\n  flavors: [small]\n"  # belongs under alice
    )
    assert_one_line(refused_start(tmp_path, f"indent-{tmp_path.name}", config=config), "users.flavors")


# --- administration through the env file ---------------------------------------------------------


def test_admin_commands_read_the_env_file(tmp_path: Path) -> None:
    """The printed `outpost --env-file ... check` works as printed; list/show/stop take `<default>`."""
    outpost = harness.start_outpost(
        tmp_path, f"admin-{tmp_path.name}", config=harness.outpost_values(tmp_path), generated_key=True
    )
    try:
        start_tiny_servers(outpost, ("",))
        env_file = outpost.data_dir / "env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        printed = next(line for line in outpost.proc.text().splitlines() if "--env-file" in line)
        command = printed.split("Administration: ", 1)[1].split("   ")[0].split()
        assert command[1:3] == ["--env-file", "outpost-data/env"], printed
        assert Path(command[0]) == VENV_BIN / "outpost", printed  # runnable as printed, with no venv activated
        shell = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}  # nothing set by hand
        check = subprocess.run(command, env=shell, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        listing = outpost_cli("--env-file", str(env_file), "services", "list", env=shell, cwd=tmp_path)
        assert "<default>" in listing.stdout, listing.stdout + listing.stderr
        shown = outpost_cli("services", "show", HUB_CREDENTIAL, "<default>", "1", "--env-file", str(env_file),
                            env=shell, cwd=tmp_path)  # fmt: skip
        assert shown.returncode == 0 and "erin" in shown.stdout, shown.stdout + shown.stderr
        rotation = outpost_cli("--env-file", str(env_file), "rotate-key", env=shell, cwd=tmp_path)
        assert rotation.returncode == 2, rotation.stdout + rotation.stderr
        assert f"PID {outpost.proc.pid}" in rotation.stderr and "outpost dev --rotate-key" in rotation.stderr
        with outpost.client() as api:  # the refused rotation changed nothing
            assert api.get("/services//1").json() == {"status": None}
    except BaseException:
        outpost.proc.stop(signal.SIGKILL)
        raise
    harness.stop_outpost(outpost)


def test_dev_rotate_key_never_answers_409(tmp_path: Path) -> None:
    """A server kept across a restart with --rotate-key: its record is re-encrypted under a new key before
    the API serves, so its polls answer 200 throughout, and only the new key stays on disk."""
    first = harness.start_outpost(
        tmp_path,
        f"rotate-{tmp_path.name}",
        config=harness.outpost_values(tmp_path),
        generated_key=True,
        extra_args=["--keep-servers"],
    )
    try:
        start_tiny_servers(first, ("",))
        old_key = (first.data_dir / "crypt_key").read_text().strip()
        first.proc.popen.send_signal(signal.SIGTERM)  # the server stays (--keep-servers): no orphan check here
        assert first.proc.popen.wait(timeout=30) == 0, first.proc.tail()
    except BaseException:
        first.proc.stop(signal.SIGKILL)
        raise
    second = harness.restart_outpost(tmp_path, first, ["--rotate-key"])
    try:
        new_key = (first.data_dir / "crypt_key").read_text().strip()
        assert new_key != old_key and "," not in new_key
        assert "1 records checked" in second.proc.text(), second.proc.tail()
        with second.client() as api:
            assert api.get("/services//1").json() == {"status": None}
        env_values = (first.data_dir / "env").read_text()
        assert new_key in env_values and old_key not in env_values
    except BaseException:
        second.proc.stop(signal.SIGKILL)
        raise
    harness.stop_outpost(second)
    assert "stopped 1 server(s)" in second.proc.text()


def test_rotate_key_with_a_key_from_the_environment_explains(tmp_path: Path) -> None:
    env = base_env(f"rotate-env-{tmp_path.name}")
    env["OUTPOST_CRYPT_KEY"] = "x" * 44
    cmd = harness.outpost_command(tmp_path / "outpost-data", free_port(), free_port())
    done = subprocess.run([*cmd, "--rotate-key"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert_one_line(done, "OUTPOST_CRYPT_KEY", "outpost rotate-key")


def test_empty_start_id_is_a_json_404_and_one_console_line(running: Outpost) -> None:
    """What the hub asks after a stop (`/services//`, `/services/<name>/`): a JSON 404, never the listing."""
    start_tiny_servers(running, ("",))
    with running.client() as api:
        for method, path in (("GET", "/services//"), ("GET", "/services/x/"), ("DELETE", "/services//")):
            response = api.request(method, path, headers={"X-Request-Id": f"empty-{method}"})
            assert response.status_code == 404 and response.json()["error"] == "UnknownService", response.text
        assert api.get("/services//1").json() == {"status": None}  # the server is untouched
    wait_until("the console line of the failed poll", lambda: "request_id=empty-GET" in running.proc.text(), 10)
    line = next(line for line in running.proc.text().splitlines() if "request_id=empty-DELETE" in line)
    assert "request failed: 404 DELETE /services/{name:segment}/{start_id:segment} hub=e2ehub" in line


def test_unusable_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "outpost-data").write_text("a file where the data directory should be\n")
    assert_one_line(refused_start(tmp_path, f"data-dir-{tmp_path.name}"), "outpost-data", "--data-dir")


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    missing = f"unix://{tmp_path}/no-redis.sock"
    done = refused_start(tmp_path, f"redis-{tmp_path.name}", env_extra={"OUTPOST_REDIS_URL": missing})
    assert_one_line(done, f"cannot reach Redis at {missing}", "OUTPOST_REDIS_URL")

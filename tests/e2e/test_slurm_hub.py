"""End to end on a real Slurm: JupyterHub + OutpostSpawner, `outpost dev --backend slurm` (through the Slurm
commands, then through slurmrestd) and the session's single-node Slurm (tests/conftest.py's `slurm`). The hub
starts a server, which runs as a batch job of the mapped account, and reaches it through outpost dev's SSH
daemon; a stop ends the job; a job that fails before its server listens reaches the hub's events with
Slurm's reason and the job's output."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_single_node import SingleNodeSlurm

from tests.e2e import harness
from tests.e2e.harness import HUB_CREDENTIAL, Hub, Outpost, SSHClientFiles
from tests.e2e.processes import progress, wait_until
from tests.slurm.conftest import JOB_USER, NODE_PYTHON

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["commands", "rest"])
def slurm_path(request: pytest.FixtureRequest) -> str:
    """How the outpost reaches Slurm: its commands on PATH, or slurmrestd with a JWT."""
    return str(request.param)


@pytest.fixture(scope="module")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory, slurm_path: str) -> Path:
    """One directory per path: each gets its own outpost dev and hub."""
    return tmp_path_factory.mktemp(f"slurm_hub_{slurm_path}")


@pytest.fixture(scope="module")
def backend_file(e2e_dir: Path, slurm: SingleNodeSlurm, slurm_path: str) -> Path:
    """The administrator's outpost_config.py, as docs/hpc.md writes it."""
    lines = [
        f"c.SlurmBackend.job_user = {JOB_USER!r}",
        f"c.SlurmBackend.python = {NODE_PYTHON!r}",
        f"c.SlurmBackend.cmd = [{NODE_PYTHON!r}, {str(slurm.root / 'tiny_singleuser.py')!r}]",
        f"c.SlurmBackend.job_dir = {str(slurm.root / 'jobs')!r}",
        "c.SlurmBackend.query_interval = 2.0",
    ]
    if slurm_path == "rest":
        lines += [
            f"c.SlurmBackend.rest_url = {slurm.rest_url!r}",
            f"c.SlurmBackend.rest_token = {slurm.token('root')!r}",
            "c.SlurmBackend.rest_user = 'root'",
        ]
    path = e2e_dir / "outpost_config.py"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def outpost_config(e2e_dir: Path, ssh_files: SSHClientFiles) -> Path:  # noqa: F811 (the imported fixture)
    return harness.outpost_values(e2e_dir, sshPublicKeys=[{"hub": HUB_CREDENTIAL, "key": ssh_files.public}])


def slurm_outpost(e2e_dir: Path, marker: str, config: Path, backend_file: Path, slurm: SingleNodeSlurm) -> Outpost:
    """`outpost dev --backend slurm` with the backend's outpost_config.py, on the session's cluster."""
    return harness.start_outpost(
        e2e_dir, marker, config=config, extra_args=["--backend", "slurm"],
        extra_env={"OUTPOST_BACKEND_CONFIG": str(backend_file), "SLURM_CONF": str(slurm.conf)},
    )  # fmt: skip


@pytest.fixture(scope="module")
def outpost(
    e2e_dir: Path, marker: str, outpost_config: Path, backend_file: Path, slurm: SingleNodeSlurm
) -> Iterator[Outpost]:
    running = slurm_outpost(e2e_dir, marker, outpost_config, backend_file, slurm)
    yield running
    harness.stop_outpost(running)


@pytest.fixture(scope="module")
def hub_extra_config(ssh_files: SSHClientFiles, outpost: Outpost) -> str:
    """Every server through outpost dev's own SSH daemon (the snippet's SSH variant)."""
    return harness.tunnelled_hub_config(ssh_files, outpost.ssh_port)


@pytest.fixture(scope="module", autouse=True)
def close_masters(hub: Hub, ssh_files: SSHClientFiles) -> Iterator[None]:  # noqa: F811 (the imported fixture)
    """Torn down before the hub, so the hub's orphan check sees no ssh master left."""
    yield
    ssh_files.exit_masters()


def outpost_jobs(slurm: SingleNodeSlurm) -> dict[str, tuple[str, str, str]]:
    """The outpost's jobs the controller holds, running or ended: job id -> (user, state, node)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i|%j|%u|%T|%N"],
        env=slurm.env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [line.split("|") for line in out.splitlines()]
    return {job_id: (user, state, node) for job_id, name, user, state, node in rows if name.startswith("outpost-")}


def test_the_hub_reaches_a_server_that_runs_as_a_slurm_job(
    hub: Hub, outpost: Outpost, slurm: SingleNodeSlurm, slurm_path: str
) -> None:
    """The server runs as a batch job of the mapped account; the hub reaches it through the SSH daemon, with
    what the hub sent and nothing of the outpost's own environment; a stop ends the job."""
    user = f"ada-{slurm_path}"
    hub.create_user(user)
    before = set(outpost_jobs(slurm))
    ready = hub.start(user)
    progress(f"MEASURED start-to-ready (Slurm job through {slurm_path}, through the SSH tunnel): {ready:.2f}s")
    (job_id,) = set(outpost_jobs(slurm)) - before
    assert outpost_jobs(slurm)[job_id] == (JOB_USER, "RUNNING", slurm.node)

    reply = hub.proxied(user, "", "?echo=JUPYTERHUB_API_TOKEN&echo=OUTPOST_CRYPT_KEY&echo=OUTPOST_START_SECRET")
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["user"] == user
    assert answer["echo"]["JUPYTERHUB_API_TOKEN"]  # the hub's env reached the job
    assert answer["echo"]["OUTPOST_CRYPT_KEY"] is None  # the outpost's own never does
    assert answer["echo"]["OUTPOST_START_SECRET"] is None  # nor the start's secret, once the port is proved
    state = (hub.server(user) or {})["state"]
    assert isinstance(state, dict)
    address = str(state["port_forward_info"]["service"]).removeprefix("http://")
    assert f"dest={address} " in outpost.proc.text()  # forwarded by our daemon, to the job's node and port

    hub.stop(user)
    wait_until(
        f"Slurm job {job_id} to end after the stop",
        lambda: outpost_jobs(slurm).get(job_id, ("", "gone", ""))[1] != "RUNNING", 30,
    )  # fmt: skip
    assert outpost_jobs(slurm).get(job_id, ("", "CANCELLED", ""))[1] in ("CANCELLED", "COMPLETING")
    assert [s for s in outpost.services() if s["name"] == ""] == []


def test_a_job_that_fails_before_listening_reaches_the_hubs_events(hub: Hub, outpost: Outpost, slurm_path: str) -> None:
    """The hub's misc makes the job's server exit at once with 3: the failed event carries Slurm's state and
    reason, the exit code and the job's last output; nothing is left in the hub or the outpost."""
    user = f"bob-{slurm_path}"
    hub.create_user(user)
    response = hub.request_start(user, "broken")
    assert response.status_code >= 400 or response.status_code == 202, response.text

    def failed_event() -> dict[str, object] | None:
        return next((e for e in hub.events(user, "broken") if e.get("failed")), None)

    event = wait_until(f"a failed event for {user}/broken", failed_event, timeout=60)
    message = str(event.get("html_message"))
    assert "ended before its server listened: FAILED" in message, event
    assert "NonZeroExitCode" in message and "exit code 3" in message, event
    # The job's own output (its line "broken on purpose" holds the server's name, a value of the hub's env,
    # so it is left out as any such line is).
    assert "Its last output:" in message and "outpost: server on port" in message, event
    wait_until(f"{user}/broken to be neither running nor pending", lambda: hub.server(user, "broken") is None, 30)
    assert [s for s in outpost.services() if s["name"] == "broken"] == []

"""The Slurm backend on a real single-node Slurm, through the commands and through slurmrestd (each test runs on
both paths unless it says why not)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import httpx
import pytest
from slurm_single_node import SingleNodeSlurm

from outpost.backends.base import Started, StartSpec
from outpost.backends.slurm.backend import SlurmJobBackend
from outpost.errors import BackendError, InvalidBody, OverrideNotAllowed
from outpost.models import ServiceId
from outpost.store.snapshots import SharedSnapshots
from tests.slurm.conftest import JOB_USER, backend_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


def spec(name: str, **env: str) -> StartSpec:
    return StartSpec(
        sid=ServiceId("hubA", name, f"{name}-{time.monotonic_ns()}"),
        env={"JUPYTERHUB_USER": "alice", "JUPYTERHUB_SERVICE_PREFIX": f"/user/alice/{name}/", **env},
    )


class Recorder:
    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []
        self.notes: list[str] = []

    async def save_state(self, state: dict[str, Any]) -> None:
        self.states.append(dict(state))

    async def progress(self, percent: int, message: str) -> None:
        self.notes.append(message)


async def start(backend: SlurmJobBackend, start_spec: StartSpec, recorder: Recorder | None = None) -> Started:
    recorder = recorder or Recorder()
    return await backend.start(start_spec, recorder.save_state, recorder.progress)


def squeue(slurm: SingleNodeSlurm, job_id: int, fmt: str) -> str:
    return subprocess.run(
        ["squeue", "--noheader", "--jobs", str(job_id), "--format", fmt], env=slurm.env, capture_output=True, text=True
    ).stdout.strip()


async def test_a_server_runs_as_a_job_of_the_mapped_account_and_stops(backend: SlurmJobBackend, slurm: SingleNodeSlurm):
    recorder = Recorder()
    started = await start(backend, spec("lab"), recorder)
    async with httpx.AsyncClient() as client:
        answer = (await client.get(started.address + "/user/alice/lab/")).json()
    assert answer["user"] == "alice"
    job_id = started.state["job_id"]
    assert squeue(slurm, job_id, "%u %T") == f"{JOB_USER} RUNNING"
    assert any(f"Submitted as Slurm job {job_id}" in note for note in recorder.notes)
    assert await backend.poll(started.state) is None

    await backend.stop(started.state)
    await backend.stop(started.state)  # idempotent
    await wait_until(lambda: _ended(backend, started.state), what="the cancelled job to end")


async def _ended(backend: SlurmJobBackend, state: dict[str, Any]) -> bool:
    return await backend.poll(state) is not None


async def test_a_job_that_fails_before_listening_says_why_with_its_output(backend: SlurmJobBackend):
    # Allowed to pass only because the hub's env reaches the job: the tiny server exits at once with 3.
    with pytest.raises(BackendError) as failed:
        await start(backend, spec("fails", TINY_EXIT_CODE="3"))
    message = failed.value.message
    assert "ended before its server listened: FAILED" in message
    assert "NonZeroExitCode" in message and "exit code 3" in message
    assert "exiting on purpose" in message  # the job's own last output


async def test_the_job_proves_its_port_or_is_not_published(backend: SlurmJobBackend, slurm: SingleNodeSlurm):
    """The port is taken from the job's comment only with the start secret's hmac: a comment its user (or anyone
    who may update the job) writes without the secret is never an address."""
    started = await start(backend, spec("proof"))
    state = dict(started.state, secret="not-the-start-secret")
    snapshot = await backend.jobs.current(0)
    job = snapshot.jobs[state["job_id"]]
    assert await backend._served(job, state) is None  # noqa: SLF001 (the proof itself)
    assert await backend._served(job, started.state) is not None  # noqa: SLF001
    await backend.stop(started.state)


async def test_an_administrators_scancel_is_the_polls_exit_code(backend: SlurmJobBackend, slurm: SingleNodeSlurm):
    started = await start(backend, spec("cancelled"))
    subprocess.run(["scancel", str(started.state["job_id"])], env=slurm.env, check=True)
    await wait_until(lambda: _ended(backend, started.state), what="the job to end")
    assert await backend.poll(started.state) == 143  # 128 + SIGTERM, as a shell shows it


async def test_a_queued_start_shows_slurms_reason_then_runs(backend: SlurmJobBackend, slurm: SingleNodeSlurm):
    """Two CPUs: one taken by another job, the first server takes the second; the next start waits in the queue
    (its progress says why), and runs once the first server stops."""
    other = _occupy(slurm, cpus=1)
    try:
        first = await start(backend, spec("first"))
        recorder = Recorder()
        second = asyncio.create_task(start(backend, spec("second"), recorder))

        async def queued() -> bool:
            return any("is queued (Resources)" in note for note in recorder.notes)

        await wait_until(queued, what="the queued note")
        assert not second.done()
        await backend.stop(first.state)
        started = await asyncio.wait_for(second, 60)
        assert await backend.poll(started.state) is None
        await backend.stop(started.state)
    finally:
        subprocess.run(["scancel", other], env=slurm.env, check=False)


async def test_a_start_still_queued_after_start_timeout_is_cancelled(
    slurm: SingleNodeSlurm, path: str, snapshots: SharedSnapshots
):
    blocker = _occupy(slurm, cpus=2)  # both CPUs: the start waits (Slurm's reason, once it has looked)
    held = SlurmJobBackend(backend_config(slurm, path, start_timeout=1.0), snapshots)
    try:
        with pytest.raises(BackendError, match=r"still queued after 1 s \(\w+\); it is cancelled"):
            await start(held, spec("held"))
        snapshot = await held.jobs.current(0)
        waiting = [job for job in snapshot.jobs.values() if job.waiting]
        assert not waiting  # cancelled, not left in the queue
    finally:
        subprocess.run(["scancel", blocker], env=slurm.env, check=False)
        await held.aclose()


def _occupy(slurm: SingleNodeSlurm, cpus: int) -> str:
    """A job of another program holding `cpus` of the node's two CPUs; its id."""
    return subprocess.run(
        ["sbatch", "--parsable", f"--uid={JOB_USER}", "--output=/dev/null", f"--chdir={slurm.root}",
         f"--cpus-per-task={cpus}", "--wrap=sleep 300"],
        env=slurm.env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


async def test_the_runtime_limit_becomes_the_jobs_time_limit(backend: SlurmJobBackend, slurm: SingleNodeSlurm):
    limited = StartSpec(sid=spec("limited").sid, env=spec("limited").env, runtime_seconds=90)
    started = await start(backend, limited)
    assert squeue(slurm, started.state["job_id"], "%l") == "2:00"  # 90 s, rounded up to Slurm's minutes
    await backend.stop(started.state)


@pytest.mark.parametrize("path", ["commands"])  # Slurm's time limit is one, whichever path submitted the job
async def test_slurm_ends_a_job_at_its_time_limit(backend: SlurmJobBackend, slurm: SingleNodeSlurm):
    limited = StartSpec(sid=spec("timeout").sid, env=spec("timeout").env, runtime_seconds=1)
    started = await start(backend, limited)
    await wait_until(lambda: _ended(backend, started.state), timeout=150, what="Slurm to end the job at its limit")
    snapshot = await backend.jobs.current(0)
    assert snapshot.jobs[started.state["job_id"]].state == "TIMEOUT"


async def test_servers_outlive_a_controller_that_is_gone_for_20_seconds(
    backend: SlurmJobBackend, slurm: SingleNodeSlurm
):
    started = await start(backend, spec("survivor"))
    slurm.stop_controller()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert await backend.poll(started.state) is None  # the last known state stands: running
            await asyncio.sleep(1)
        snapshot = await backend.jobs.current(0)
        assert snapshot.stale and snapshot.error  # what the controller's absence looked like, for the log
    finally:
        slurm.start_controller()
    async with httpx.AsyncClient() as client:
        assert (await client.get(started.address + "/user/alice/survivor/")).status_code == 200
    await wait_until(lambda: _fresh(backend), what="a list from the restarted controller")
    assert await backend.poll(started.state) is None
    await backend.stop(started.state)


async def _fresh(backend: SlurmJobBackend) -> bool:
    return not (await backend.jobs.current(0)).stale


async def test_polls_share_one_controller_query_per_interval(slurm: SingleNodeSlurm, path: str, redis: Any):
    """However many backends (function instances) poll, the controller is asked once per interval."""
    instances = [
        SlurmJobBackend(backend_config(slurm, path, query_interval=30.0), SharedSnapshots(redis)) for _ in range(4)
    ]
    started = await start(instances[0], spec("shared"))
    before = _job_info_rpcs(slurm)
    polls = await asyncio.gather(*(b.poll(started.state) for b in instances for _ in range(25)))
    assert polls == [None] * 100
    assert _job_info_rpcs(slurm) - before <= 1
    await instances[0].stop(started.state)
    for made in instances:
        await made.aclose()


def _job_info_rpcs(slurm: SingleNodeSlurm) -> int:
    """REQUEST_JOB_INFO as sdiag counts them: the controller's own count of job-list queries."""
    out = subprocess.run(["sdiag"], env=slurm.env, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("REQUEST_JOB_INFO "):
            return int(line.split("count:")[1].split()[0])
    return 0


async def test_jobs_carry_their_identity_for_re_adoption(backend: SlurmJobBackend, path: str):
    started = await start(backend, spec("adoptable"))
    sid = spec("adoptable").sid
    found = dict(await backend.running())
    (mine,) = [s for s in found if s.name == "adoptable"]
    assert found[mine]["job_id"] == started.state["job_id"]
    if path == "rest":
        assert not backend.keeps_identity  # slurmrestd v0.0.38 cannot set the admin comment
    else:
        await backend.remember(started.state, "sealed-identity")
        await wait_until(lambda: _recalled(backend, started.state), what="the admin comment in the job list")
    await backend.stop(started.state)
    assert sid.hub == mine.hub


async def _recalled(backend: SlurmJobBackend, state: dict[str, Any]) -> bool:
    backend.jobs._cache  # noqa: B018 (the list is read fresh below)
    snapshot = await backend.jobs.current(0)
    return snapshot.jobs[state["job_id"]].admin_comment == "sealed-identity"


@pytest.mark.parametrize(
    "misc", [{"job_user": "root"}, {"prologue": "id"}, {"sbatch_options": {"uid": "0"}}, {"python": "/bin/sh"}]
)
async def test_a_hub_never_sets_what_is_the_administrators(backend: SlurmJobBackend, misc: dict[str, Any]):
    start_spec = StartSpec(sid=spec("x").sid, env=spec("x").env, misc=misc)
    with pytest.raises(OverrideNotAllowed):
        await start(backend, start_spec)


@pytest.mark.parametrize("name", ["SBATCH_ACCOUNT", "SLURM_CONF", "OUTPOST_START_SECRET"])
async def test_a_hubs_env_cannot_steer_slurm_or_the_wrapper(backend: SlurmJobBackend, name: str):
    with pytest.raises(InvalidBody, match=name):
        await start(backend, spec("steer", **{name: "x"}))


async def test_an_option_value_cannot_start_a_new_line(slurm: SingleNodeSlurm, path: str, snapshots: SharedSnapshots):
    crafted = SlurmJobBackend(backend_config(slurm, path), snapshots)
    start_spec = StartSpec(sid=spec("nl").sid, env=spec("nl").env, misc={"partition": "debug\n#SBATCH --uid=0"})
    with pytest.raises(InvalidBody, match="partition"):
        await start(crafted, start_spec)
    await crafted.aclose()

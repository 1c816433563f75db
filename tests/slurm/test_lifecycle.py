"""The Slurm backend behind the real functions: a hub's start becomes a job, its poll reads the shared job list,
an administrator's scancel is the poll's exit code, and a record Redis lost is re-adopted from the job."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from slurm_single_node import SingleNodeSlurm

from outpost.backends.slurm.jobs import parse_comment
from outpost.settings import Settings
from tests.conftest import basic, start_body
from tests.slurm.conftest import JOB_USER, NODE_PYTHON
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")
A = basic("hubA")


@pytest.fixture
def backend_config(tmp_path: Path, slurm: SingleNodeSlurm) -> Path:
    """The commands path (re-adoption needs the admin comment, which only the commands can set)."""
    path = tmp_path / "outpost_config.py"
    path.write_text(
        f"c.SlurmBackend.cmd = [{NODE_PYTHON!r}, {str(slurm.root / 'tiny_singleuser.py')!r}]\n"
        f"c.SlurmBackend.python = {NODE_PYTHON!r}\n"
        f"c.SlurmBackend.job_user = {JOB_USER!r}\n"
        f"c.SlurmBackend.job_dir = {str(slurm.root / 'jobs')!r}\n"
        "c.SlurmBackend.start_query_interval = 0.2\n"
        "c.SlurmBackend.query_interval = 0.5\n"
    )
    return path


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(backend="slurm")


async def test_a_start_is_a_job_and_a_lost_record_is_re_adopted_from_it(
    api: httpx.AsyncClient, redis: aioredis.Redis, slurm: SingleNodeSlurm
) -> None:
    started = await api.post("/services", json=start_body(name="hpc"), headers=A)
    assert started.status_code == 200, started.text
    address = started.json()["service"]
    assert (await api.get("/services/hpc/1", headers=A)).json() == {"status": None}
    await redis.flushall()  # Redis came back without its data: the poll re-adopts from the job's admin comment
    assert (await api.get("/services/hpc/1", headers=A)).json() == {"status": None}
    [listed] = (await api.get("/services", headers=A)).json()
    assert listed["name"] == "hpc"
    assert (await api.delete("/services/hpc/1", headers=A)).status_code == 200
    async with httpx.AsyncClient() as client:

        async def gone() -> bool:
            try:
                await client.get(address)
            except httpx.TransportError:
                return True
            return False

        await wait_until(gone, what="the cancelled job's server to go")


async def test_an_administrators_scancel_reaches_the_hub_as_the_exit_code(
    api: httpx.AsyncClient, slurm: SingleNodeSlurm
) -> None:
    assert (await api.post("/services", json=start_body(name="cancelled"), headers=A)).status_code == 200
    jobs = subprocess.run(["squeue", "--noheader", "--format", "%i %k"], env=slurm.env, capture_output=True,
                          text=True, check=True).stdout.split("\n")  # fmt: skip
    (job_id,) = [line.split()[0] for line in jobs if _names(line, "cancelled")]
    subprocess.run(["scancel", job_id], env=slurm.env, check=True)

    async def ended() -> bool:
        return (await api.get("/services/cancelled/1", headers=A)).json() != {"status": None}

    await wait_until(ended, what="the poll to see the cancelled job")
    assert (await api.get("/services/cancelled/1", headers=A)).json() == {"status": 143}


def _names(squeue_line: str, name: str) -> bool:
    """Whether a `%i %k` line is the job of server `name` (its comment carries the service id)."""
    comment = parse_comment(squeue_line.split(" ", 1)[-1])
    return comment is not None and comment.sid.name == name

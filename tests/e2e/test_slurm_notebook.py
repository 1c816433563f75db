"""docs/hpc.md's tutorial as written: `outpost dev --backend slurm` with its outpost_config.py (the clone's
jupyterhub-singleuser, run as root because that is set explicitly: the virtualenv under /root is not another
account's to run), the hub with the lines outpost dev printed, and a real notebook server as a Slurm job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_single_node import SingleNodeSlurm

from tests.e2e import harness
from tests.e2e.harness import Hub, Outpost
from tests.e2e.processes import VENV_BIN, progress, wait_until
from tests.e2e.test_slurm_hub import outpost_jobs, slurm_outpost

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def outpost(e2e_dir: Path, marker: str, outpost_config: Path, slurm: SingleNodeSlurm) -> Iterator[Outpost]:
    backend_file = e2e_dir / "outpost_config.py"
    backend_file.write_text(
        'c.SlurmBackend.job_user = "root"\n'
        f"c.SlurmBackend.cmd = [{str(VENV_BIN / 'jupyterhub-singleuser')!r}]\n"
        'c.SlurmBackend.args = ["--allow-root"]\n'
        'c.SlurmBackend.partition = "debug"\n'
    )
    running = slurm_outpost(e2e_dir, marker, outpost_config, backend_file, slurm)
    yield running
    harness.stop_outpost(running)


@pytest.fixture(scope="module")
def hub_extra_config() -> str:
    return "c.Spawner.start_timeout = 300\nc.Spawner.http_timeout = 60\n"


def test_the_tutorial_reaches_a_notebook_that_runs_as_a_slurm_job(
    hub: Hub, outpost: Outpost, slurm: SingleNodeSlurm
) -> None:
    hub.create_user("ada")
    before = set(outpost_jobs(slurm))
    ready = hub.start("ada", timeout=300)
    progress(f"MEASURED start-to-ready (jupyterhub-singleuser as a Slurm job, the tutorial): {ready:.2f}s")
    (job_id,) = set(outpost_jobs(slurm)) - before
    assert outpost_jobs(slurm)[job_id] == ("root", "RUNNING", slurm.node)
    status = hub.proxied("ada", "", "api/status")
    assert status.status_code == 200 and "kernels" in status.json(), status.text
    notes = [str(e.get("message")) for e in hub.events("ada")]
    assert any(f"Submitted as Slurm job {job_id}" in note for note in notes), notes

    hub.stop("ada")
    wait_until(
        f"Slurm job {job_id} to end after the stop",
        lambda: outpost_jobs(slurm).get(job_id, ("", "gone", ""))[1] != "RUNNING", 30,
    )  # fmt: skip

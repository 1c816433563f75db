"""A hub's Slurm job cannot make the outpost show it a file only root may read: the job's output lies where
the job's user writes, and a link put in its place (or any file not the user's own) is not read."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from slurm_single_node import SingleNodeSlurm

from outpost.backends.base import StartSpec
from outpost.backends.slurm.backend import SlurmJobBackend
from outpost.models import ServiceId
from outpost.store.snapshots import SharedSnapshots
from tests.slurm.conftest import backend_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _noop(*_: object) -> None:
    return None


async def test_a_link_in_place_of_the_jobs_output_is_not_followed(
    slurm: SingleNodeSlurm, redis: aioredis.Redis, tmp_path: Path
) -> None:
    os.environ["SLURM_CONF"] = str(slurm.conf)
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    secret = tmp_path / "root-only"
    secret.write_text("ROOT-ONLY-MARKER\n")
    secret.chmod(0o600)
    backend = SlurmJobBackend(backend_config(slurm, "commands"), SharedSnapshots(redis))
    spec = StartSpec(
        sid=ServiceId("hubA", "link", str(time.monotonic_ns())),
        env={"JUPYTERHUB_USER": "mallory", "JUPYTERHUB_SERVICE_PREFIX": "/user/mallory/"},
    )
    started = await backend.start(spec, _noop, _noop)
    try:
        output = Path(started.state["output"])
        assert "tiny server" in "\n".join(await backend.logs(started.state))  # the job's own output is shown
        output.unlink()
        output.symlink_to(secret)  # what the job's user can do in its own directory
        os.lchown(output, os.stat(output.parent).st_uid, -1)
        assert not any("ROOT-ONLY-MARKER" in line for line in await backend.logs(started.state))
        output.unlink()
        os.link(secret, output)  # a hard link keeps root as the owner: not the user's file either
        assert not any("ROOT-ONLY-MARKER" in line for line in await backend.logs(started.state))
    finally:
        await backend.stop(started.state)
        await backend.aclose()

"""The Slurm backend on the session's real single-node Slurm (tests/conftest.py's `slurm`), through either
path: the commands or slurmrestd."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from slurm_single_node import SingleNodeSlurm
from traitlets.config import Config

from outpost.backends.slurm.backend import SlurmJobBackend
from outpost.store.snapshots import SharedSnapshots

# Jobs run as this account (the mapped job_user); its Python must be one it may run: the system's.
JOB_USER = "nobody"
NODE_PYTHON = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def slurm_conf(slurm: SingleNodeSlurm) -> None:
    """Clients find the private cluster (the autouse environment fixture restores os.environ after each test)."""
    os.environ["SLURM_CONF"] = str(slurm.conf)
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"


def backend_config(slurm: SingleNodeSlurm, path: str, **options: object) -> Config:
    config = Config()
    o = config.SlurmBackend
    o.cmd = [NODE_PYTHON, str(slurm.root / "tiny_singleuser.py")]
    o.python = NODE_PYTHON
    o.job_user = JOB_USER
    o.job_dir = str(slurm.root / "jobs")
    o.start_query_interval = 0.2
    o.query_interval = 0.5
    o.listen_timeout = 30.0
    if path == "rest":
        o.rest_url = slurm.rest_url
        o.rest_token = slurm.token("root")
        o.rest_user = "root"
    for name, value in options.items():
        setattr(o, name, value)
    return config


@pytest.fixture(params=["commands", "rest"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def snapshots(redis: aioredis.Redis) -> AsyncIterator[SharedSnapshots]:
    yield SharedSnapshots(redis)


@pytest_asyncio.fixture
async def backend(slurm: SingleNodeSlurm, path: str, snapshots: SharedSnapshots) -> AsyncIterator[SlurmJobBackend]:
    made = SlurmJobBackend(backend_config(slurm, path), snapshots)
    yield made
    await made.aclose()

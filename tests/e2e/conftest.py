"""Fixtures for the end-to-end tests: `outpost dev` and a real JupyterHub, one pair per test module.

A module changes the hub's configuration by overriding `hub_extra_config` (lines appended to the
generated `jupyterhub_config.py`). Teardown stops the hub, then the outpost, each with SIGINT, and
fails if either leaves a process behind.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.harness import SSH_UID, Hub, Outpost, SSHClientFiles
from tests.e2e.processes import SPAWNED


@pytest.fixture(scope="session")
def chp() -> str:
    """The configurable-http-proxy executable (installed into .ci/node on first use)."""
    return harness.chp_command()


@pytest.fixture(scope="module")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def marker() -> str:
    return secrets.token_hex(8)


@pytest.fixture(scope="module")
def outpost_config(e2e_dir: Path) -> Path | None:
    """The YAML file for `outpost dev --config`."""
    return harness.outpost_values(e2e_dir)


@pytest.fixture(scope="module")
def outpost_env(e2e_dir: Path) -> dict[str, str] | None:
    """Environment variables of an upstream Outpost's pod for `outpost dev` (None: ours only)."""
    return None


@pytest.fixture(scope="module")
def outpost(
    e2e_dir: Path, marker: str, outpost_config: Path | None, outpost_env: dict[str, str] | None
) -> Iterator[Outpost]:
    upstream = outpost_env is not None
    running = harness.start_outpost(
        e2e_dir, marker, config=outpost_config, upstream_env=upstream, extra_env=outpost_env
    )
    yield running
    harness.stop_outpost(running)


@pytest.fixture(scope="module")
def hub_extra_config() -> str:
    return ""


@pytest.fixture(scope="module")
def hub(e2e_dir: Path, marker: str, outpost: Outpost, chp: str, hub_extra_config: str) -> Iterator[Hub]:
    running = harness.start_hub(e2e_dir, marker, outpost, chp, hub_extra_config)
    yield running
    harness.stop_hub(running)


@pytest.fixture(scope="module")
def ssh_files() -> Iterator[SSHClientFiles]:
    """A hub's SSH key and client files, owned by the user forwardbasespawner runs ssh as."""
    if shutil.which("ssh") is None:
        pytest.fail("the OpenSSH client (ssh) is required: apt-get install openssh-client")
    directory = Path(tempfile.mkdtemp(prefix="oe2e-ssh-"))
    try:
        files = SSHClientFiles(directory)
        if os.getuid() == 0:
            try:
                account = pwd.getpwuid(SSH_UID)
            except KeyError:
                pytest.skip(f"running as root, forwardbasespawner runs ssh as uid {SSH_UID}, which has no account")
            for path in (directory, files.key):
                os.chown(path, account.pw_uid, account.pw_gid)
        yield files
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, show the tails of the logs of the processes involved."""
    report: pytest.TestReport = yield
    if report.failed:
        for proc in SPAWNED[-6:]:
            report.sections.append((f"{proc.name} log, last lines ({proc.log})", proc.tail(40)))
    return report

"""Who servers run as, and the modes of what the outpost keeps: the helpers, without a stack."""

from __future__ import annotations

import os
import pwd
import stat
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from outpost.backends.base import StartSpec
from outpost.backends.local import LocalBackend, default_home_root
from outpost.backends.privileges import ROOT_REFUSAL, ServerUser, lookup_user, server_user, unusable_path
from outpost.cli.dev import choose_server_user
from outpost.errors import BackendError, ConfigurationError, OverrideNotAllowed
from outpost.files import private_dir, write_private
from outpost.models import ServiceId
from tests.conftest import OWN_USER, TINY_SERVER
from tests.support.recorder import Recorder

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as CI runs")
NOBODY = pwd.getpwnam("nobody")
SYSTEM_PYTHON = "/usr/bin/python3"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_data_directory_is_made_private(tmp_path: Path) -> None:
    existing = tmp_path / "data"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    assert private_dir(existing) == existing and mode(existing) == 0o700
    assert mode(private_dir(tmp_path / "new" / "data")) == 0o700


def test_a_secret_is_0600_and_never_written_through_an_existing_path(tmp_path: Path) -> None:
    secret = tmp_path / "crypt_key"
    write_private(secret, "s3cret")
    assert secret.read_text() == "s3cret" and mode(secret) == 0o600
    (tmp_path / "planted").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        write_private(tmp_path / "planted", "s3cret")
    assert not (tmp_path / "elsewhere").exists()


def test_users_are_looked_up_by_name_or_uid() -> None:
    assert lookup_user("nobody") == ServerUser("nobody", NOBODY.pw_uid, NOBODY.pw_gid)
    assert lookup_user(str(NOBODY.pw_uid)).name == "nobody"
    with pytest.raises(ConfigurationError, match="no user 'no-such-user'"):
        lookup_user("no-such-user")
    with pytest.raises(BackendError, match="no user"):
        server_user("no-such-user")


def test_the_outpost_s_own_user_changes_nothing_and_another_drops_every_group() -> None:
    own = server_user(OWN_USER)
    assert own.is_outpost and own.popen_args() == {}
    if os.geteuid() != NOBODY.pw_uid:
        assert lookup_user("nobody").popen_args() == {"user": NOBODY.pw_uid, "group": NOBODY.pw_gid, "extra_groups": []}


@as_root
def test_root_never_runs_servers_without_run_as() -> None:
    with pytest.raises(BackendError) as refused:
        server_user("")
    assert refused.value.message == ROOT_REFUSAL and "c.LocalProcessBackend.run_as" in ROOT_REFUSAL
    assert server_user("root").uid == 0  # the explicit choice


@as_root
def test_what_nobody_can_run_is_asked_of_the_system() -> None:
    nobody = lookup_user("nobody")
    path = os.environ["PATH"]
    assert unusable_path(nobody, [SYSTEM_PYTHON, str(TINY_SERVER)], path) == ""
    assert unusable_path(nobody, ["python3", str(TINY_SERVER)], "/usr/bin") == ""
    # The venv's interpreter lives under /root: nobody cannot execute it.
    assert unusable_path(nobody, [sys.executable, str(TINY_SERVER)], path) != ""
    # A script is usable only with its #! interpreter: the venv's console scripts are not.
    venv_script = Path(sys.executable).parent / "outpost"
    assert unusable_path(nobody, [str(venv_script)], path) != ""
    assert unusable_path(nobody, ["no-such-command-anywhere"], path) == "no-such-command-anywhere"
    assert unusable_path(lookup_user("root"), [sys.executable], path) == ""


@as_root
@pytest.mark.parametrize(
    ("cmd", "run_as", "args"),
    [
        ([SYSTEM_PYTHON, str(TINY_SERVER)], "nobody", []),
        ([sys.executable, str(TINY_SERVER)], "root", ["--allow-root"]),
    ],
)
def test_outpost_dev_picks_nobody_or_says_why_servers_run_as_root(cmd: list[str], run_as: str, args: list[str]) -> None:
    config = Config()
    config.LocalProcessBackend.cmd = cmd
    said = choose_server_user(config)
    assert config.LocalProcessBackend.run_as == run_as and config.LocalProcessBackend.args == (
        args or config.LocalProcessBackend.args
    )
    if run_as == "root":
        assert said.startswith("WARNING") and "AS ROOT" in said and "c.LocalProcessBackend.run_as" in said
        assert "/root/" in said or str(Path(sys.executable).parent) in said  # what nobody could not use
    else:
        assert "'nobody'" in said and "WARNING" not in said


@as_root
def test_outpost_dev_keeps_the_administrator_s_choice() -> None:
    config = Config()
    config.LocalProcessBackend.cmd = [sys.executable]
    config.LocalProcessBackend.run_as = "daemon"
    assert "'daemon'" in choose_server_user(config)
    assert config.LocalProcessBackend.run_as == "daemon" and "args" not in config.LocalProcessBackend


def spec(**misc: object) -> StartSpec:
    return StartSpec(sid=ServiceId("hub", "srv", "1"), env={"JUPYTERHUB_USER": "alice"}, misc=dict(misc))


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("misc", [{"run_as": "root"}, {"home_root": "/etc"}, {"run_as": "0", "port": 1}])
async def test_a_hub_never_chooses_who_its_server_runs_as(tmp_path: Path, misc: dict[str, object]) -> None:
    config = Config()
    config.LocalProcessBackend.run_as = OWN_USER
    with pytest.raises(OverrideNotAllowed, match="does not allow overriding"):
        await LocalBackend(config, tmp_path / "data").start(spec(**misc), Recorder().save, Recorder().report)
    assert not (tmp_path / "data").exists()


@as_root
@pytest.mark.asyncio(loop_scope="session")
async def test_the_library_as_root_refuses_before_creating_anything(tmp_path: Path) -> None:
    config = Config()
    config.LocalProcessBackend.cmd = [SYSTEM_PYTHON, str(TINY_SERVER)]
    with pytest.raises(BackendError) as refused:
        await LocalBackend(config, tmp_path / "data").start(spec(), Recorder().save, Recorder().report)
    assert refused.value.status == 419 and "c.LocalProcessBackend.run_as" in refused.value.message
    assert not (tmp_path / "data").exists()


def test_homes_of_other_users_live_outside_the_data_directory_one_root_per_outpost(tmp_path: Path) -> None:
    first, second = default_home_root(tmp_path / "a"), default_home_root(tmp_path / "b")
    assert first != second and first.parent == second.parent == Path("/var/lib/outpost/homes")
    assert default_home_root(tmp_path / "a" / ".." / "a") == first  # keyed by the resolved path

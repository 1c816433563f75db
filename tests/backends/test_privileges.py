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
from outpost.backends.privileges import (
    DEV_UID_RANGE,
    ROOT_REFUSAL,
    ServerUser,
    ServerUsers,
    lookup_user,
    parse_uid_range,
    server_user,
    system_ids,
    unusable_path,
)
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
def test_root_never_runs_servers_without_run_as_or_uid_range() -> None:
    with pytest.raises(BackendError) as refused:
        server_user("")
    assert refused.value.message == ROOT_REFUSAL and "c.LocalProcessBackend.run_as" in ROOT_REFUSAL
    assert "c.LocalProcessBackend.uid_range" in ROOT_REFUSAL
    with pytest.raises(BackendError, match="neither"):
        ServerUsers("", "", None)
    assert server_user("root").uid == 0  # the explicit choice


def test_a_uid_range_is_first_to_last_and_leaves_the_system_s_ids_out() -> None:
    assert parse_uid_range("60578-61183") == range(60578, 61184) and parse_uid_range(" ") == range(0)
    assert parse_uid_range(DEV_UID_RANGE)
    for bad in ("61183-60578", "0-65535", "100-2000", "60000", "a-b", "1000-1000000"):
        with pytest.raises(BackendError, match="uid_range"):
            parse_uid_range(bad)
    assert system_ids(range(NOBODY.pw_uid, NOBODY.pw_uid + 1)) == [NOBODY.pw_uid]


class Uids:
    """Hands out uids as the store would, and counts the questions."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int, list[int]]] = []

    async def hub_uid(self, hub: str, first: int, last: int, skip: list[int]) -> int | None:
        self.asked.append((hub, first, last, skip))
        return first + sorted({asked[0] for asked in self.asked}).index(hub)


@pytest.mark.asyncio(loop_scope="session")
async def test_run_as_comes_before_uid_range_and_only_root_changes_user() -> None:
    uids = Uids()
    shared = ServerUsers(OWN_USER, "70000-70009", uids)
    assert not shared.per_hub and await shared.of_hub("hubA") == await shared.of_hub("hubB") and uids.asked == []
    users = ServerUsers("", "70000-70009", uids)
    if os.geteuid() != 0:  # no uid to change to: the outpost's own user, whatever the range
        assert not users.per_hub and (await users.of_hub("hubA")).is_outpost
        return
    assert users.per_hub and not users.is_outpost
    a, b = await users.of_hub("hubA"), await users.of_hub("hubB")
    assert (a.uid, a.gid, b.uid, b.gid) == (70000, 70000, 70001, 70001)
    assert a.popen_args() == {"user": 70000, "group": 70000, "extra_groups": []}
    assert uids.asked[0][1:3] == (70000, 70009)
    assert await users.of_hub("hubA") == a and len(uids.asked) == 2  # asked of the store once per hub


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
def test_outpost_dev_gives_each_hub_a_uid_when_one_can_run_the_command() -> None:
    config = Config()
    config.LocalProcessBackend.cmd = [SYSTEM_PYTHON, str(TINY_SERVER)]
    said = choose_server_user(config)
    assert config.LocalProcessBackend.uid_range == DEV_UID_RANGE and "run_as" not in config.LocalProcessBackend
    assert DEV_UID_RANGE in said and "WARNING" not in said


@as_root
def test_outpost_dev_says_why_servers_run_as_root() -> None:
    config = Config()
    config.LocalProcessBackend.cmd = [sys.executable, str(TINY_SERVER)]
    said = choose_server_user(config)
    assert config.LocalProcessBackend.run_as == "root" and config.LocalProcessBackend.args == ["--allow-root"]
    assert "uid_range" not in config.LocalProcessBackend
    assert said.startswith("WARNING") and "AS ROOT" in said and "c.LocalProcessBackend.run_as" in said
    assert "/root/" in said or str(Path(sys.executable).parent) in said  # what the uid could not use


@as_root
def test_outpost_dev_keeps_the_administrator_s_choice() -> None:
    config = Config()
    config.LocalProcessBackend.cmd = [sys.executable]
    config.LocalProcessBackend.run_as = "daemon"
    assert "'daemon'" in choose_server_user(config)
    assert config.LocalProcessBackend.run_as == "daemon" and "args" not in config.LocalProcessBackend
    ranged = Config()
    ranged.LocalProcessBackend.uid_range = "70000-70099"
    assert "70000-70099" in choose_server_user(ranged) and "run_as" not in ranged.LocalProcessBackend


def spec(**misc: object) -> StartSpec:
    return StartSpec(sid=ServiceId("hub", "srv", "1"), env={"JUPYTERHUB_USER": "alice"}, misc=dict(misc))


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "misc", [{"run_as": "root"}, {"uid_range": "1000-1001"}, {"home_root": "/etc"}, {"run_as": "0", "port": 1}]
)
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

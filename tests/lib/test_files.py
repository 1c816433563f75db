"""Files for the outpost's eyes only: directories 0700 and secrets 0600 whatever the umask, and a secret
never written through a path that already exists.

(tests/backends' test_privileges.py also covers an existing 0755 data directory and a planted link.)"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost.files import private_dir, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_a_new_directory_is_0700_with_its_parents_created(tmp_path: Path, umask: int) -> None:
    made = private_dir(tmp_path / "a" / "b" / "data")
    assert made == tmp_path / "a" / "b" / "data" and made.is_dir()
    assert mode(made) == 0o700


def test_an_open_directory_is_closed_and_its_contents_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    (data / "kept").write_text("x")
    assert mode(private_dir(data)) == 0o700
    assert (data / "kept").read_text() == "x"


def test_a_secret_is_0600_from_the_first_byte_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    secret = tmp_path / "crypt_key"
    write_private(secret, "s3cret ünïcode\n")
    assert mode(secret) == 0o600
    assert secret.read_text() == "s3cret ünïcode\n"


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "crypt_key"
    existing.write_text("the key in use")
    with pytest.raises(FileExistsError):
        write_private(existing, "another key")
    assert existing.read_text() == "the key in use"

"""What all backends decide alike (outpost.backends.common)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from outpost.backends import common
from outpost.errors import InvalidBody
from outpost.models import ServiceId


@pytest.mark.parametrize(
    ("certs", "expected"),
    [
        ({"keyfile": "K", "certfile": "C", "cafile": "A"}, True),
        ({"keyfile": "K", "certfile": "C"}, True),
        ({"cafile": "A"}, False),  # nothing the server could present itself with
        ({"keyfile": "K", "certfile": ""}, False),
        ({}, False),
    ],
)
def test_tls_needs_a_key_and_a_certificate(certs: dict[str, str], expected: bool) -> None:
    assert common.uses_tls(certs) is expected
    assert common.scheme(common.uses_tls(certs)) == ("https" if expected else "http")


def test_service_url_ends_with_the_hubs_prefix_or_slash() -> None:
    env = {"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/lab/"}
    assert common.service_url("https", "0.0.0.0", 8888, env) == "https://0.0.0.0:8888/user/alice/lab/"
    assert common.service_url("http", "127.0.0.1", 5, {}) == "http://127.0.0.1:5/"


def test_ssl_env_names_the_three_files_singleuser_reads() -> None:
    paths = {"keyfile": "/c/k", "certfile": "/c/c", "cafile": "/c/a", "trust-hub-ca": "/c/t"}
    assert common.ssl_env(paths) == {
        "JUPYTERHUB_SSL_KEYFILE": "/c/k",
        "JUPYTERHUB_SSL_CERTFILE": "/c/c",
        "JUPYTERHUB_SSL_CLIENT_CA": "/c/a",
    }


def test_resource_env_announces_the_limits_that_are_set() -> None:
    values = {"mem_limit": "2G", "cpu_limit": 1.5, "mem_guarantee": None, "cpu_guarantee": 0, "image": "x"}
    assert common.resource_env(values) == {"MEM_LIMIT": "2G", "CPU_LIMIT": "1.5"}
    assert common.resource_env({}) == {}


def test_resource_env_writes_each_value_as_told() -> None:
    written = common.resource_env({"mem_limit": 1, "cpu_guarantee": 2.0}, lambda key, value: f"{key}={value}")
    assert written == {"MEM_LIMIT": "mem_limit=1", "CPU_GUARANTEE": "cpu_guarantee=2.0"}


def test_service_dir_name_is_fixed_length_stable_and_never_shared() -> None:
    sid = ServiceId("hubA", "srv", "1")
    name = common.service_dir_name(sid)
    assert len(name) == 16 and set(name) <= set("0123456789abcdef")
    assert common.service_dir_name(ServiceId("hubA", "srv", "1")) == name
    others = [
        ServiceId("hubA", "srv", "2"),
        ServiceId("hubB", "srv", "1"),
        ServiceId("hubA", "srv/1", ""),  # the parts' boundaries count
        ServiceId("hubA", "", "srv1"),
        ServiceId("hubA", "<default>", "1"),
    ]
    assert len({name, *map(common.service_dir_name, others)}) == len(others) + 1


def test_service_dir_name_tells_long_names_apart() -> None:
    """The log form of a ServiceId is cut after 200 characters: the directory name is not."""
    prefix = "n" * 300
    assert common.service_dir_name(ServiceId("hubA", prefix + "a", "1")) != common.service_dir_name(
        ServiceId("hubA", prefix + "b", "1")
    )


@pytest.mark.parametrize(
    ("ip", "host"),
    [("", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("::1", "::1"), ("10.1.2.3", "10.1.2.3")],
)
def test_connect_host_maps_only_wildcards_to_the_loopback(ip: str, host: str) -> None:
    assert common.connect_host(ip) == host


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replace_private_writes_0600_and_replaces_whole(tmp_path: Path) -> None:
    path = tmp_path / "identity.sealed"
    path.write_text("old")
    path.chmod(0o644)
    common.replace_private(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.sealed"]


def test_replace_private_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    (tmp_path / "keyfile.partial").symlink_to(target)
    common.replace_private(tmp_path / "keyfile", "secret")
    assert target.read_text() == "untouched"
    assert (tmp_path / "keyfile").read_text() == "secret" and not (tmp_path / "keyfile").is_symlink()


def test_write_private_files_returns_paths_of_0600_files(tmp_path: Path) -> None:
    paths = common.write_private_files(tmp_path, {"keyfile": "K", "trust-hub-ca": "T"})
    assert paths == {"keyfile": str(tmp_path / "keyfile"), "trust-hub-ca": str(tmp_path / "trust-hub-ca")}
    assert [Path(p).read_text() for p in paths.values()] == ["K", "T"]
    assert {_mode(Path(p)) for p in paths.values()} == {0o600}


@pytest.mark.parametrize("name", ["../escape", "a/b", "/etc/x", ".hidden", "..", "", "trust-\n"])
def test_write_private_files_refuses_names_that_are_not_file_names(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "certs"
    directory.mkdir()
    with pytest.raises(InvalidBody):
        common.write_private_files(directory, {"keyfile": "K", name: "X"})
    assert list(tmp_path.rglob("*")) == [directory]  # nothing written, not even the valid one


def test_log_tail_keeps_the_last_lines() -> None:
    text = "\n".join(f"line {n}" for n in range(common.LOG_TAIL_LINES + 50))
    tail = common.log_tail(text)
    assert len(tail) == common.LOG_TAIL_LINES
    assert tail[0] == "line 50" and tail[-1] == f"line {common.LOG_TAIL_LINES + 49}"
    assert common.log_tail("") == []

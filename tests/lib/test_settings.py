"""Upstream pods' environment names, read through the one Settings object."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from outpost.errors import ConfigurationError
from outpost.settings import Settings, load_settings
from outpost.upstream_import import database_url
from tests.lib.test_credits import CONFIG as CREDITS


@pytest.fixture(autouse=True)
def crypt_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_CRYPT_KEY", Fernet.generate_key().decode())


def test_hub_credentials_from_upstreams_secret_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("usernames", "one;two")
    monkeypatch.setenv("passwords", "pw1;pw2")
    assert load_settings().hub_credentials() == {"one": "pw1", "two": "pw2"}
    monkeypatch.setenv("OUTPOST_HUB_USERNAMES", "ours")  # our names win when both are set
    monkeypatch.setenv("OUTPOST_HUB_PASSWORDS", "secret")
    assert load_settings().hub_credentials() == {"ours": "secret"}


def test_config_file_alias(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTPOST_CONFIG_FILE", str(tmp_path / "outpost_config.py"))
    assert load_settings().backend_config == tmp_path / "outpost_config.py"
    monkeypatch.setenv("OUTPOST_BACKEND_CONFIG", str(tmp_path / "ours.py"))
    assert load_settings().backend_config == tmp_path / "ours.py"


def test_flavors_and_credits_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flavors, credits = tmp_path / "flavors.yaml", tmp_path / "credits.yaml"
    flavors.write_text(yaml.safe_dump({"flavors": {"small": {"max": 2}}, "hubs": {"a": {"jupyterhub_name": "hubA"}}}))
    credits.write_text(yaml.safe_dump(CREDITS))
    monkeypatch.setenv("OUTPOST_FLAVORS_PATH", str(flavors))
    monkeypatch.setenv("OUTPOST_CREDITS_PATH", str(credits))
    settings = load_settings()
    assert set(settings.flavor_policy().flavors) == {"small"} and set(settings.flavor_policy().hubs) == {"a"}
    assert set(settings.credit_policy().credits) == {"standard", "gpu"}


def test_missing_files_mean_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTPOST_FLAVORS_PATH", str(tmp_path / "no.yaml"))
    monkeypatch.setenv("OUTPOST_CREDITS_PATH", str(tmp_path))  # a directory is no file either
    settings = load_settings()
    assert not settings.flavor_policy().configured and settings.credit_policy().credits == {}


def test_bad_files_and_double_configuration_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken, values = tmp_path / "credits.yaml", tmp_path / "values.yaml"
    broken.write_text("credits: [unclosed")
    monkeypatch.setenv("OUTPOST_CREDITS_PATH", str(broken))
    with pytest.raises(ConfigurationError, match="OUTPOST_CREDITS_PATH .*cannot read it"):
        load_settings()
    broken.write_text(yaml.safe_dump({"credits": {"a": 1}}))
    with pytest.raises(ConfigurationError, match="credits.credits.a: must be a mapping"):
        load_settings()
    broken.write_text(yaml.safe_dump(CREDITS))
    values.write_text(yaml.safe_dump({"credits": CREDITS}))
    with pytest.raises(ConfigurationError, match="both in the values and in OUTPOST_CREDITS_PATH"):
        load_settings(values)
    monkeypatch.delenv("OUTPOST_CREDITS_PATH")
    assert set(load_settings(values).credit_policy().hubs) == {"partners", "everyone"}  # the values' credits: key


@pytest.mark.parametrize(("given", "kept"), [("/outpost/", "/outpost"), ("", ""), ("/", ""), ("/a/b", "/a/b")])
def test_base_path_is_normalised(monkeypatch: pytest.MonkeyPatch, given: str, kept: str) -> None:
    monkeypatch.setenv("OUTPOST_BASE_PATH", given)
    assert load_settings().base_path == kept


@pytest.mark.parametrize("bad", ["outpost", "//evil.example", "/a\nb"])
def test_a_base_path_must_be_a_path(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("OUTPOST_BASE_PATH", bad)
    with pytest.raises(ConfigurationError, match="OUTPOST_BASE_PATH must be a path"):
        load_settings()


def test_upstream_database_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert str(database_url(load_settings(SQL_TYPE="sqlite"), None)) == "sqlite:////tmp/sqlite.db"
    monkeypatch.setenv("SQL_DATABASE_URL", "//data/outpost.db")
    assert str(database_url(load_settings(), None)) == "sqlite:////data/outpost.db"
    for name, value in {"SQL_TYPE": "postgresql", "SQL_USER": "out post", "SQL_PASSWORD": "p@ss:/word",
                        "SQL_HOST": "db", "SQL_PORT": "5433", "SQL_DATABASE": "outpost"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    url = database_url(load_settings(), None)
    assert (url.drivername, url.username, url.password, url.host, url.port) == (
        "postgresql+psycopg", "out post", "p@ss:/word", "db", 5433,
    )  # fmt: skip
    assert "p@ss" not in url.render_as_string(hide_password=True)
    assert database_url(load_settings(), "postgresql://u@h/d").drivername == "postgresql+psycopg"
    with pytest.raises(ConfigurationError, match="not a database URL"):
        database_url(load_settings(), "not a url")


def test_settings_fields_keep_their_names() -> None:
    settings = Settings(crypt_key=Fernet.generate_key().decode(), hub_usernames="a", hub_passwords="b")
    assert settings.hub_credentials() == {"a": "b"}

"""The upstream database's location: upstream's SQL_* environment variables, or an explicit URL."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from outpost.errors import ConfigurationError
from outpost.settings import load_settings
from outpost.upstream_import import database_url


@pytest.fixture(autouse=True)
def crypt_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_CRYPT_KEY", Fernet.generate_key().decode())


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

"""The env file `outpost dev` writes for the administrator's commands (`outpost --env-file FILE ...`).

Written and read with python-dotenv, so quoting is the library's (values may hold any character).
"""

from __future__ import annotations

import os
from pathlib import Path

import dotenv

from outpost.errors import ConfigurationError
from outpost.settings import Settings


def admin_environment(settings: Settings) -> dict[str, str]:
    """The OUTPOST_* variables that give another process (an admin command, a function) these settings."""
    values = {
        "OUTPOST_CRYPT_KEY": settings.crypt_key.get_secret_value(),
        "OUTPOST_HUB_USERNAMES": settings.hub_usernames,
        "OUTPOST_HUB_PASSWORDS": settings.hub_passwords.get_secret_value(),
        "OUTPOST_REDIS_URL": settings.redis_url.get_secret_value() if settings.redis_url else "",
        "OUTPOST_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "OUTPOST_BACKEND": settings.backend,
        # The outpost's own listeners, which `import-upstream` never publishes as a server's address.
        "OUTPOST_API_PORT": str(settings.api_port),
        "OUTPOST_SSH_PORT": str(settings.ssh_port),
    }
    if settings.metrics_token is not None:
        values["OUTPOST_METRICS_TOKEN"] = settings.metrics_token.get_secret_value()
    if settings.redis_password is not None:
        values["OUTPOST_REDIS_PASSWORD"] = settings.redis_password.get_secret_value()
    if settings.backend_config is not None:
        values["OUTPOST_BACKEND_CONFIG"] = str(settings.backend_config.resolve())
    return values


def write(path: Path, values: dict[str, str], config_file: Path | None) -> None:
    """Replace `path` with `values` (and OUTPOST_CONFIG), readable by its owner only (0600)."""
    if config_file is not None:
        values = {**values, "OUTPOST_CONFIG": str(config_file.resolve())}
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for key, value in values.items():
        dotenv.set_key(path, key, value, quote_mode="always")
    path.chmod(0o600)  # set_key rewrites through a temporary file; the mode stays the owner's only


def load(path: Path) -> None:
    """Put the file's variables into this process's environment; they win over the shell's."""
    if not path.is_file():
        raise ConfigurationError(f"--env-file {path}: no such file (`outpost dev` writes it into its data directory)")
    dotenv.load_dotenv(path, override=True)

"""What every backend decides the same way, so the hub sees one behaviour whichever backend runs its
servers: whether a start uses TLS, the server's own URL, the resource limits it is told, where a start's
files live and how secret ones are written, the address to connect to, and how much output `logs` keeps.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from outpost.errors import InvalidBody, shown
from outpost.files import write_private
from outpost.models import ServiceId

# Lines of a server's output `logs` returns: what the hub's collect_logs shows, not the whole history.
LOG_TAIL_LINES = 200
# JupyterHub's convention: a server is told its limits (jupyter-resource-usage shows them).
RESOURCE_KEYS = ("mem_limit", "mem_guarantee", "cpu_limit", "cpu_guarantee")
# Where jupyterhub-singleuser looks for its internal_ssl files, by the name the hub gives each certificate.
SSL_ENV = {
    "keyfile": "JUPYTERHUB_SSL_KEYFILE",
    "certfile": "JUPYTERHUB_SSL_CERTFILE",
    "cafile": "JUPYTERHUB_SSL_CLIENT_CA",
}
# A certificate's name as a file name: the hub chooses the names (its certs and trust bundles), so no
# separator, no "." or "..", nothing hidden.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# Addresses a server may bind to that no client can connect to: a connection goes to the loopback instead.
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def uses_tls(certs: Mapping[str, str]) -> bool:
    """Whether a start serves https: the hub (internal_ssl) sent a key and a certificate with it.
    A cafile alone is not enough: the server could not present itself."""
    return bool(certs.get("keyfile") and certs.get("certfile"))


def scheme(tls: bool) -> str:
    return "https" if tls else "http"


def service_url(url_scheme: str, ip: str, port: int, hub_env: Mapping[str, str]) -> str:
    """JUPYTERHUB_SERVICE_URL: where jupyterhub-singleuser binds and serves, under the hub's prefix."""
    return f"{url_scheme}://{ip}:{port}{hub_env.get('JUPYTERHUB_SERVICE_PREFIX', '/')}"


def ssl_env(paths: Mapping[str, str]) -> dict[str, str]:
    """The variables that point the server at its certificate files (`paths`: by the hub's names)."""
    return {variable: paths[name] for name, variable in SSL_ENV.items()}


def resource_env(values: Mapping[str, object], written: Callable[[str, object], str] | None = None) -> dict[str, str]:
    """MEM_LIMIT, CPU_GUARANTEE, ...: the limits that are set (not None or 0, as JupyterHub's own
    Spawner.get_env skips them), each as `written(key, value)` writes it (default: str(value))."""
    return {
        key.upper(): written(key, values[key]) if written else str(values[key])
        for key in RESOURCE_KEYS
        if values.get(key)
    }


def service_dir_name(sid: ServiceId) -> str:
    """A directory name for one start: fixed length, safe in a path whatever the hub named it, and never
    shared by two starts (hashed from the exact parts: the log form of a ServiceId is cut when long)."""
    return hashlib.sha256(json.dumps([sid.hub, sid.name, sid.start_id]).encode()).hexdigest()[:16]


def connect_host(ip: str) -> str:
    """The host to reach a server that binds to `ip`: a wildcard address means this machine's loopback."""
    return "127.0.0.1" if ip in _WILDCARDS else ip


def replace_private(path: Path, text: str) -> None:
    """`path` replaced by a file of mode 0600 from its first byte, never readable by anyone else in
    between: written beside it (not through a planted link: `write_private`) and renamed over it, so
    a reader sees the old file or the whole new one."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    write_private(partial, text)
    partial.replace(path)


def write_private_files(directory: Path, files: Mapping[str, str]) -> dict[str, str]:
    """Certificate files (name -> text) in `directory`, each 0600; their paths, by name. A name that is
    not a plain file name is refused before anything is written (InvalidBody)."""
    unsafe = [name for name in files if not _FILE_NAME.fullmatch(name)]
    if unsafe:
        raise InvalidBody(f"invalid certificate names: {shown(unsafe)}")
    paths = {}
    for name, text in files.items():
        path = directory / name
        replace_private(path, text)
        paths[name] = str(path)
    return paths


def log_tail(text: str) -> list[str]:
    """The last LOG_TAIL_LINES lines of a server's output."""
    return text.splitlines()[-LOG_TAIL_LINES:]

"""Which names of a start's `env` may reach the notebook server.

A hub sends the protocol's names (`JUPYTERHUB_*`, `JUPYTER_*`, `JPY_*`); any other name (`LD_PRELOAD`,
`PYTHONPATH`, `BROWSER`, ...) can make the server's interpreter or loader run code the hub chose, so it passes
only when the administrator lists it for that hub (`hubOptions.<hub>.allowedEnv`, fnmatch patterns).
Within the protocol's names, those that make a server load code or configuration from a path, or choose
what code runs, need the same allowance: one user's home may hold a file another user's server would load.
The names the outpost decides itself (the server's bind URL and certificate paths) are dropped unless allowed:
the OutpostSpawner sends them with every start, and the backend sets its own.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PROTOCOL_PREFIXES = ("JUPYTERHUB_", "JUPYTER_", "JPY_")

# Read from jupyter_core (paths.py), jupyter_server (serverapp.py, gateway/) and jupyterhub's singleuser
# package: search paths for config, data, kernels and extensions, the token file, the app and extensions
# jupyterhub-singleuser loads, the gateway client (a class to import, certificates, a remote kernel
# service), and the switches that drop the administrator's config or relax file-permission checks.
LOADS_CODE_SUFFIXES = ("_DIR", "_DIRS", "_PATH", "_FILE", "_FILES", "_APP", "_EXTENSION", "_EXTENSIONS", "_CLASS")
LOADS_CODE_PREFIXES = ("JUPYTER_GATEWAY_",)
LOADS_CODE_NAMES = frozenset({
    "JUPYTER_DEFAULT_PROVISIONER_NAME", "JUPYTER_NO_CONFIG", "JUPYTER_USE_PROGRAMDATA", "JUPYTER_ALLOW_INSECURE_WRITES",
})  # fmt: skip
# Variables an interpreter, loader or shell reads at start-up to run code (a few of many): `outpost check`
# warns when a hub's allowedEnv lets one through.
RUNS_CODE_EXAMPLES = (
    "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONWARNINGS", "PYTHONHOME",
    "BROWSER", "BASH_ENV", "ENV", "PERL5OPT", "NODE_OPTIONS", "JUPYTER_CONFIG_DIR", "JUPYTER_PATH",
)  # fmt: skip
# Set by every backend from its own decisions; JupyterHub's get_env() sends the hub's values of them.
DECIDED_BY_OUTPOST = frozenset({
    "JUPYTERHUB_SERVICE_URL", "JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_SSL_CERTFILE", "JUPYTERHUB_SSL_CLIENT_CA",
})  # fmt: skip


@dataclass(frozen=True)
class EnvVerdict:
    env: dict[str, str]  # what the server may get
    refused: list[str]  # names the hub may not send, sorted; the start must be refused when any


@functools.lru_cache(maxsize=256)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regular expression for a hub's patterns (case-sensitive, as the names are); None for none."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)) if patterns else None


def _loads_code(name: str) -> bool:
    """A protocol name that makes the server load code or configuration from a path, or choose what runs."""
    return name.endswith(LOADS_CODE_SUFFIXES) or name.startswith(LOADS_CODE_PREFIXES) or name in LOADS_CODE_NAMES


def screen_env(env: Mapping[str, str], allowed: Iterable[str]) -> EnvVerdict:
    """Keep what the hub may send; name what it may not. `allowed` are the hub's `allowedEnv` patterns."""
    allows = _matcher(tuple(allowed))
    kept: dict[str, str] = {}
    refused: list[str] = []
    for name, value in env.items():
        if allows is not None and allows.match(name):
            kept[name] = value
        elif name in DECIDED_BY_OUTPOST:
            continue
        elif name.startswith(PROTOCOL_PREFIXES) and not _loads_code(name):
            kept[name] = value
        else:
            refused.append(name)
    return EnvVerdict(kept, sorted(refused))

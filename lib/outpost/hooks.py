"""Administrator hooks from `outpost_config.py`, configured the way JupyterHub is configured.

c.Outpost.normalise_authentication = lambda auth: {**auth, "name": auth["name"].lower()}
c.Outpost.allow_override = lambda hub, key, value: key in {"image", "port", "ip"}
c.Outpost.sanitize_start_response = lambda hub, name, address: address.replace("svc", "svc.example")
"""

from __future__ import annotations

from typing import Any

from traitlets import Callable, Type, Unicode, Union
from traitlets.config import Config, Configurable


class Outpost(Configurable):
    normalise_authentication = Callable(
        None, allow_none=True, help="Rewrite a user's authentication dict before flavor rules match it"
    ).tag(config=True)
    allow_override = Callable(
        None, allow_none=True, help="(hub, key, value) -> bool: may this start override this backend option?"
    ).tag(config=True)
    sanitize_start_response = Callable(
        None, allow_none=True, help="(hub, name, address) -> address: rewrite the address given to the hub"
    ).tag(config=True)
    # A class or an import string: importing JupyterHub only when the spawner backend is used.
    spawner_class = Union(
        [Unicode(), Type()],
        default_value=None,
        allow_none=True,
        help="The JupyterHub Spawner class the 'spawner' backend runs (class, import path or entry-point name)",
    ).tag(config=True)


def load_hooks(config: Config) -> Outpost:
    return Outpost(config=config)


def sanitized(hooks: Outpost, hub: str, name: str, address: str) -> str:
    if hooks.sanitize_start_response is None:
        return address
    result: Any = hooks.sanitize_start_response(hub, name, address)
    return str(result)

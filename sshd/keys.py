"""The daemon's keys: a host key generated once and persisted, and the authorized keys mapped to hubs."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from outpost.errors import ConfigurationError
from outpost.settings import SSHKeyEntry

__all__ = ["AuthorizedKeys", "Grant", "load_host_key"]

logger = logging.getLogger(__name__)

HOST_KEY_ALGORITHM = "ssh-ed25519"


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """Read the host key at `path`, generating and persisting it (mode 0600) on first start.

    The file is written atomically, so a crash never leaves a half-written key that would
    change the fingerprint the hubs have pinned with `StrictHostKeyChecking=accept-new`.
    """
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        pass
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigurationError(f"cannot read SSH host key {path}: {exc}") from None
    key = asyncssh.generate_private_key(HOST_KEY_ALGORITHM)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key("openssh"))
            out.flush()
            os.fsync(out.fileno())
        # Never replace a key another process wrote meanwhile: its fingerprint may be pinned already.
        os.link(tmp, path)
    except FileExistsError:
        return asyncssh.read_private_key(path)
    finally:
        os.unlink(tmp)
    logger.info("generated SSH host key %s (%s)", path, key.get_fingerprint())
    return key


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authorized key may reach: the services of `hubs`, or of every hub when `hubs` is None."""

    fingerprint: str
    hubs: frozenset[str] | None

    def allows(self, hub: str) -> bool:
        return self.hubs is None or hub in self.hubs

    def describe(self) -> str:
        return "*" if self.hubs is None else ",".join(sorted(self.hubs))


class AuthorizedKeys:
    """Public key -> `Grant`. A key listed several times gets the union of its entries."""

    def __init__(self, entries: Iterable[str | SSHKeyEntry]) -> None:
        grants: dict[bytes, Grant] = {}
        for index, entry in enumerate(entries):
            line, hub = (entry, None) if isinstance(entry, str) else (entry.key, entry.hub)
            try:
                key = asyncssh.import_public_key(line.strip())
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ConfigurationError(f"sshPublicKeys[{index}]: not a public key line ({exc})") from None
            hubs = None if hub is None else frozenset({hub})
            previous = grants.get(key.public_data)
            if previous is not None:
                hubs = None if hubs is None or previous.hubs is None else previous.hubs | hubs
            grants[key.public_data] = Grant(key.get_fingerprint(), hubs)
        self._grants = grants

    def __len__(self) -> int:
        return len(self._grants)

    def grant_for(self, key: asyncssh.SSHKey) -> Grant | None:
        return self._grants.get(key.public_data)

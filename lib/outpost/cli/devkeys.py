"""`outpost dev --rotate-key`: a new Fernet key for the one kept in the data directory, with no window of 409s.

The new key goes first into the key file, the old ones stay (they still decrypt); every record is
re-encrypted before the API serves; then the old keys leave the file. An interrupted rotation is
safe to repeat: until the last step the file holds every key that encrypted something.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet

from outpost import rotation
from outpost.errors import ConfigurationError
from outpost.runtime import get_runtime


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only: a crash keeps the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def begin_rotation(key_file: Path) -> bool:
    """Put a new key first in `key_file`, keeping the old ones. False when there is nothing to rotate yet."""
    if os.environ.get("OUTPOST_CRYPT_KEY"):
        raise ConfigurationError(
            "--rotate-key rotates the key `outpost dev` keeps in its data directory, but OUTPOST_CRYPT_KEY is set: "
            "put the new key first (OUTPOST_CRYPT_KEY=new,old), restart, run `outpost rotate-key`, then drop old"
        )
    if not key_file.exists():
        return False
    _replace(key_file, f"{Fernet.generate_key().decode()},{key_file.read_text().strip()}")
    return True


async def finish_rotation(key_file: Path, say: rotation.Say) -> None:
    """Re-encrypt every record under the new (first) key, then keep only that key in `key_file`."""
    await rotation.rotate_keys((await get_runtime()).store, say)
    first = key_file.read_text().strip().split(",", 1)[0]
    _replace(key_file, first)
    say(f"key rotated: {key_file} holds the new key only")

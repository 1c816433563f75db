"""Files and directories for the outpost's eyes only: the data directory, secrets, server directories."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """`path` as a directory of mode 0700, created with its parents when missing. An existing one is
    made 0700 too: a data directory created earlier (or by hand) may have been 0755."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """A new file of mode 0600 from its first byte. O_EXCL: never written through a planted link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)

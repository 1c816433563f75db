"""`outpost dev` as a process for a benchmark: the local backend running the tiny server, on free ports.

As root, servers run as `nobody` with /usr/bin/python3 (the venv's interpreter may sit in root's
home, out of `nobody`'s reach): the outpost refuses to start servers as root without `run_as`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet

from bench.stack import TINY_SERVER, free_port
from outpost.backends.local import default_home_root

OUTPOST_CLI = str(Path(sys.executable).with_name("outpost"))


def backend_config(path: Path) -> Path:
    """The tiny server, run unprivileged when this process is root."""
    if os.geteuid() == 0 and Path("/usr/bin/python3").exists():
        python, user = "/usr/bin/python3", "nobody"
    else:
        python, user = sys.executable, pwd.getpwuid(os.geteuid()).pw_name
    path.write_text(
        f"c.LocalProcessBackend.cmd = [{python!r}, {str(TINY_SERVER)!r}]\n"
        f"c.LocalProcessBackend.run_as = {user!r}\n"
        # hundreds of starts share two cores: readiness may take a while, and that is what is measured
        "c.LocalProcessBackend.start_timeout = 300.0\n"
        "c.LocalProcessBackend.stop_timeout = 10.0\n"
    )
    return path


class OutpostDev:
    """`outpost dev` as an administrator runs it: the given hubs, configuration values and Redis."""

    def __init__(
        self, workdir: Path, hubs: Mapping[str, str], values: dict[str, Any], redis_env: Mapping[str, str]
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "outpost-data"
        self.config = backend_config(workdir / "outpost_config.py")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "outpost-dev.log"
        values_file = workdir / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTPOST_", "REDIS_URL"))}
        env.update(
            OUTPOST_CRYPT_KEY=Fernet.generate_key().decode(),
            OUTPOST_HUB_USERNAMES=";".join(hubs),
            OUTPOST_HUB_PASSWORDS=";".join(hubs.values()),
            OUTPOST_BACKEND_CONFIG=str(self.config),
            PYTHONUNBUFFERED="1",
            **redis_env,
        )
        self.args = [OUTPOST_CLI, "dev", "--api-host", "127.0.0.1", "--api-port", str(self.port)]
        self.args += ["--ssh-port", str(free_port()), "--data-dir", str(self.data_dir), "--config", str(values_file)]
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def worker_pids(self) -> list[int]:
        """The process that serves the API (its CPU time is the cost of a request)."""
        assert self.proc is not None
        return [self.proc.pid]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    @contextlib.contextmanager
    def running(self) -> Iterator[OutpostDev]:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self._env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready(60.0)
            yield self
        finally:
            self._stop()
            shutil.rmtree(default_home_root(self.data_dir), ignore_errors=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"outpost dev exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as answer:
                    answer.read()
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"outpost dev did not answer within {timeout:.0f}s:\n{self.tail()}") from None
                time.sleep(0.05)

    def _stop(self) -> None:
        """Ctrl-C: outpost dev stops whatever it still runs; SIGKILL to the group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

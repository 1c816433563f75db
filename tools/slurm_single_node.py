"""A private single-node Slurm on this machine: munged, slurmctld, slurmd and slurmrestd (JWT), all in one
directory, on free ports, as root. What tests/slurm's fixtures run and what docs/hpc.md's tutorial types.

    python tools/slurm_single_node.py start /tmp/slurm    # prints the SLURM_CONF and REST URL to use
    python tools/slurm_single_node.py stop /tmp/slurm

Nothing outside the directory is touched: its own munge key and socket, its own slurm.conf (clients find
it through SLURM_CONF), state and logs. Debian's packages: `sh tools/install_slurm.sh`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("slurmrestd", "slurmd", "slurmctld", "munged")
REST_API = "v0.0.38"  # Slurm 22.05 (Debian 12); slurmrestd loads only this plugin (no slurmdbd here)
# How long a finished job stays in the controller's memory (squeue/REST still show it), seconds.
MIN_JOB_AGE = 300


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all held open until each is chosen, so no two are the same."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("0.0.0.0", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def binaries_missing() -> list[str]:
    wanted = ("munged", "mungekey", "slurmctld", "slurmd", "slurmrestd", "sbatch", "squeue", "scancel", "scontrol")
    return [name for name in wanted if not shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin")]


@dataclass
class SingleNodeSlurm:
    """One node named after this machine, `cpus` CPUs in partition `debug` (the default)."""

    root: Path
    cpus: int = 2
    memory_mb: int = 4000

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def node(self) -> str:
        return socket.gethostname().split(".")[0]

    @property
    def env(self) -> dict[str, str]:
        """The environment a Slurm client needs: the private slurm.conf."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self._ports()['rest']}"

    def _ports(self) -> dict[str, int]:
        path = self.root / "ports"
        if not path.exists():
            ports = dict(zip(("ctld", "slurmd", "rest"), free_ports(3), strict=True))
            path.write_text(" ".join(f"{k}={v}" for k, v in ports.items()))
        return {k: int(v) for k, v in (item.split("=") for item in path.read_text().split())}

    def write_config(self) -> None:
        for sub in ("state", "spool", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # jobs of other users read slurm.conf (their srun/squeue would)
        ports = self._ports()
        key = self.root / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, env=self.env)
        key.chmod(0o600)
        jwt = self.root / "jwt_hs256.key"
        if not jwt.exists():
            jwt.write_bytes(os.urandom(32))
        jwt.chmod(0o600)
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=outpost",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={ports['ctld']}",
                    f"SlurmdPort={ports['slurmd']}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={r}/munge.sock",
                    "AuthAltTypes=auth/jwt",
                    f"AuthAltParameters=jwt_key={jwt}",
                    "CredType=cred/munge",
                    f"StateSaveLocation={r}/state",
                    f"SlurmdSpoolDir={r}/spool",
                    f"SlurmctldPidFile={r}/slurmctld.pid",
                    f"SlurmdPidFile={r}/slurmd.pid",
                    f"SlurmctldLogFile={r}/logs/slurmctld.log",
                    f"SlurmdLogFile={r}/logs/slurmd.log",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    f"MinJobAge={MIN_JOB_AGE}",
                    "KillWait=5",
                    # The node keeps the CPUs declared here, even more than the machine has (servers mostly idle:
                    # the benchmark runs 50 at once); slurmd would drain it otherwise.
                    "SlurmdParameters=config_overrides",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb}",
                    f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _daemon(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.root / "logs" / f"{name}.out").open("ab") as log:
            return subprocess.Popen(
                [name, *args], env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start(self) -> None:
        self.write_config()
        r = self.root
        if not self._alive("munged"):
            self._daemon(
                "munged",
                ["--force", f"--socket={r}/munge.sock", f"--key-file={r}/munge.key", f"--pid-file={r}/munged.pid",
                 f"--log-file={r}/logs/munged.log", f"--seed-file={r}/munge.seed"],
            )  # fmt: skip
            self._wait(lambda: (r / "munge.sock").exists(), "munged")
        self.start_controller()
        if not self._alive("slurmd"):
            self._daemon("slurmd", ["-D"])
        self._wait(self._node_ready, "slurmd to register", daemon="slurmd")
        rest_port = self._ports()["rest"]
        if not _listens(rest_port):
            # slurmrestd refuses to run as root: it drops to nobody; SLURM_JWT=daemon: JWT from clients only.
            # Once it has, its environment may be unreadable: it is watched through its process, not /proc.
            restd = self._daemon(
                "slurmrestd",
                ["-a", "rest_auth/jwt", "-s", f"openapi/{REST_API}", "-u", "nobody", "-g", "nogroup",
                 f"127.0.0.1:{rest_port}"],
                {**self.env, "SLURM_JWT": "daemon"},
            )  # fmt: skip
            self._wait(lambda: _listens(rest_port) or restd.poll() is not None, "slurmrestd")
            if restd.poll() is not None:
                raise RuntimeError(f"slurmrestd ended: {(self.root / 'logs' / 'slurmrestd.out').read_text()[-2000:]}")

    def start_controller(self) -> None:
        if not self._alive("slurmctld"):
            self._daemon("slurmctld", ["-D"])  # after a restart, it recovers its jobs from StateSaveLocation
        self._wait(lambda: "UP" in self._scontrol("ping").stdout, "slurmctld", daemon="slurmctld")
        if self._alive("slurmd"):
            # A restarted controller shows the node UNKNOWN until slurmd registers again, which it does on its
            # own some seconds later; a reconfigure asks it to now.
            self._scontrol("reconfigure")
            self._wait(self._node_ready, "the node to come back", daemon="slurmd")

    def stop_controller(self) -> None:
        """As a restart or an upgrade stops it: SIGTERM, so it saves its state (jobs started since its last
        periodic save would otherwise come back as pending, and slurmd would end them)."""
        self._signal("slurmctld", signal.SIGTERM)
        self._wait(lambda: not self._alive("slurmctld"), "slurmctld to end")

    def token(self, user: str, lifespan: int = 86400) -> str:
        """A JWT for `user`, as slurmrestd takes it (X-SLURM-USER-TOKEN)."""
        out = subprocess.run(
            ["scontrol", "token", f"username={user}", f"lifespan={lifespan}"],
            env=self.env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return out.strip().partition("=")[2]

    def stop(self) -> None:
        """The daemons, then what they leave behind: jobs run on without them (slurmstepd and its children)."""
        for name in DAEMONS:
            self._signal(name, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(self._alive(n) for n in DAEMONS) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in DAEMONS:
            self._signal(name, signal.SIGKILL)
        for pid in self._pids(None):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _scontrol(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=20)

    def _node_ready(self) -> bool:
        """The node registered with this controller (after a restart it is UNKNOWN, with no slurmd start time,
        until slurmd answers) and takes jobs."""
        fields = dict(item.partition("=")[::2] for item in self._scontrol("show", "node", self.node).stdout.split())
        state = fields.get("State", "").split("+")[0]
        return state in ("IDLE", "MIXED", "ALLOCATED") and fields.get("SlurmdStartTime", "None") != "None"

    def _pids(self, name: str | None) -> list[int]:
        """The pids of this directory's `name` daemons (found by their config or socket argument); with no
        name, every process of this cluster (job steps and jobs too: they have its SLURM_CONF)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                environ = b""
            if name is not None and Path(argv[0].decode(errors="replace")).name != name:
                continue
            # slurmrestd drops to nobody, and then its environment may not be readable: its address names it.
            mine = (str(self.root).encode(), f"127.0.0.1:{self._ports()['rest']}".encode())
            named = any(m in arg for arg in argv for m in mine)
            if named or f"SLURM_CONF={self.conf}".encode() in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def _alive(self, name: str) -> bool:
        return bool(self._pids(name))

    def _signal(self, name: str, sig: signal.Signals) -> None:
        for pid in self._pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = 60.0, daemon: str = "") -> None:
        """Until `ready()`; fails at the deadline, or at once when `daemon` has ended."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline or (daemon and not self._alive(daemon)):
                logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in (self.root / "logs").glob("*"))
                raise RuntimeError(f"waited {timeout:.0f} s for {what}; logs:\n{logs}")
            time.sleep(0.2)


def _listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    missing = binaries_missing()
    if missing:
        print(f"missing: {' '.join(missing)} (sh tools/install_slurm.sh)", file=sys.stderr)
        return 1
    cluster = SingleNodeSlurm(args.directory.resolve())
    if args.action == "stop":
        cluster.stop()
        return 0
    cluster.start()
    print(f"export SLURM_CONF={cluster.conf}")
    print(f"# slurmrestd: {cluster.rest_url}/slurm/{REST_API}/  (token: SLURM_CONF={cluster.conf} scontrol token)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

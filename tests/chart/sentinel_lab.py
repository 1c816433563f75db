"""The chart's sentinel-mode pods as local processes: its init.sh, then each pod's Redis node and sentinel.

Run by test_sentinel_pods.py inside a private mount namespace whose /etc/hosts maps the pods' DNS names
(<node>-<i>.<headless domain>) to 127.0.0.2-4, standing in for the headless Service. What differs from a
pod: /data and /secrets are directories of the pod under the work directory (the script's two paths are
replaced), and each process binds its pod's address (a pod has a network namespace of its own).

    python -m tests.chart.sentinel_lab <workdir> <init.sh> <redis-server dir>   -> JSON report on stdout
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

NODE, DOMAIN, MASTER = "outpost-redis-node", "outpost-redis-headless.outpost.svc.cluster.local", "outpost"
PASSWORD, SENTINEL_PASSWORD = "node-password", "sentinel-password"
PODS = 3


def host(i: int) -> str:
    return f"{NODE}-{i}.{DOMAIN}"


def address(i: int) -> str:
    return f"127.0.0.{i + 2}"


def until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> float:
    """Seconds until `check()` held; raises after `timeout`."""
    begun = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - begun
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() - begun > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Pod:
    def __init__(self, work: Path, i: int, script: str, bindir: str) -> None:
        self.i, self.bindir = i, bindir
        self.root = work / f"pod{i}"
        self.data, self.secrets = self.root / "data", self.root / "secrets"
        self.data.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(exist_ok=True)
        (self.secrets / "password").write_text(PASSWORD)
        (self.secrets / "sentinel-password").write_text(SENTINEL_PASSWORD)
        self.script = self.root / "init.sh"
        self.script.write_text(script.replace("/data", str(self.data)).replace("/secrets", str(self.secrets)))
        self.processes: list[subprocess.Popen[bytes]] = []

    def init(self) -> str:
        env = {
            **os.environ,
            "PATH": f"{self.bindir}:{os.environ['PATH']}",
            "POD_NAME": f"{NODE}-{self.i}",
            "NODE": NODE,
            "DOMAIN": DOMAIN,
            "REPLICAS": str(PODS),
            "MASTER_NAME": MASTER,
            "QUORUM": "2",
            "MIN_REPLICAS": "1",
            "MAX_LAG": "10",
            "DOWN_AFTER": "1000",
            "FAILOVER_TIMEOUT": "3000",
        }
        result = subprocess.run(["sh", str(self.script)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def config(self, name: str) -> str:
        return (self.data / "conf" / name).read_text()

    def start(self) -> None:
        for name, extra in (("redis.conf", []), ("sentinel.conf", ["--sentinel"])):
            conf = self.data / "conf" / name
            with conf.open("a") as file:  # the pod's own address, as its network namespace would give it
                file.write(f"bind {address(self.i)}\nlogfile {self.root / (name + '.log')}\n")
            self.processes.append(
                subprocess.Popen([f"{self.bindir}/redis-server", str(conf), *extra], start_new_session=True)
            )

    def kill(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(10)
        self.processes.clear()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:  # a fresh replica may ignore SIGTERM while writing its AOF
                process.kill()
                process.wait(5)
        self.processes.clear()

    def node(self) -> redis.Redis:
        return redis.Redis(host(self.i), 6379, password=PASSWORD, socket_timeout=2, socket_connect_timeout=1)

    def sentinel(self) -> redis.Redis:
        return redis.Redis(host(self.i), 26379, password=SENTINEL_PASSWORD, socket_timeout=2, socket_connect_timeout=1)


def replication(pod: Pod) -> dict[str, Any]:
    return dict(pod.node().info("replication"))


def main(work: Path, script_path: Path, bindir: str) -> dict[str, Any]:
    script = script_path.read_text()
    pods = [Pod(work, i, script, bindir) for i in range(PODS)]
    report: dict[str, Any] = {}
    try:
        # First install: no sentinel answers, so ordinal 0 is the primary.
        report["first_init"] = [pod.init() for pod in pods]
        report["first_configs"] = {
            i: (pod.config("redis.conf"), pod.config("sentinel.conf")) for i, pod in enumerate(pods)
        }
        for pod in pods:
            pod.start()
        for pod in pods[1:]:
            until("replicas linked", lambda p=pod: replication(p)["master_link_status"] == "up")

        def settled() -> bool:
            for pod in pods:
                state = dict(pod.sentinel().execute_command("SENTINEL", "MASTER", MASTER))
                pairs = {k.decode() if isinstance(k, bytes) else k: v for k, v in state.items()}
                if int(pairs["num-other-sentinels"]) != 2 or int(pairs["num-slaves"]) != 2:
                    return False
            return True

        report["settled_seconds"] = until("sentinels see each other and both replicas", settled)
        primary = pods[0].node()
        pipe = primary.pipeline(transaction=False)
        pipe.set("outpost:lab", "written before the failover")
        pipe.wait(1, 2000)
        report["write_acknowledged_by"] = pipe.execute()[1]

        # The primary's pod dies; the sentinels promote a replica (known to them by DNS name).
        pods[0].kill()
        killed = time.monotonic()

        def new_primary() -> str:
            name, _port = pods[1].sentinel().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
            return str(name.decode())

        until("a failover", lambda: new_primary() != host(0))
        report["failover_seconds"] = time.monotonic() - killed
        report["new_primary"] = new_primary()
        # The pod comes back: its init step asks the sentinels and joins the new primary as a replica.
        report["rejoin_init"] = pods[0].init()
        report["rejoin_redis_conf"] = pods[0].config("redis.conf")
        pods[0].start()
        until("the old primary linked as a replica", lambda: replication(pods[0])["master_link_status"] == "up")
        report["old_primary_role"] = replication(pods[0])["role"]
        report["value_on_old_primary"] = pods[0].node().get("outpost:lab").decode()
        return report
    finally:
        for pod in pods:
            pod.stop()


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])))

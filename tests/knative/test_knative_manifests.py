"""knative/*.yaml: valid against the CRDs, within Knative's webhook rules, wired to each other."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from k8s_checks import core_errors, cr_errors, find_objects, is_core, knative_service_errors, one_object

REPO = Path(__file__).resolve().parents[2]
KNATIVE = REPO / "knative"

# Service -> (FUNCTION_SOURCE, FUNCTION_TARGET, service account): the application's contract.
FUNCTIONS = {
    "outpost-start": ("/app/functions/start/main.py", "start_service", "outpost-functions"),
    "outpost-poll": ("/app/functions/poll/main.py", "poll_service", "outpost-functions-reader"),
    "outpost-stop": ("/app/functions/stop/main.py", "stop_service", "outpost-functions"),
    "outpost-events": ("/app/functions/events/main.py", "start_service_event", "outpost-functions"),
    "outpost-timer": ("/app/functions/timer/main.py", "poll_timer_event", "outpost-functions"),
    "outpost-pod-status": ("/app/functions/pod_status/main.py", "pod_status_event", "outpost-functions-reader"),
}
PUBLIC = {"outpost-start", "outpost-poll", "outpost-stop"}
SECRET_ENV = {
    "OUTPOST_CRYPT_KEY": ("outpost-cryptkey", "secret_key"),
    "OUTPOST_HUB_USERNAMES": ("outpost-users", "usernames"),
    "OUTPOST_HUB_PASSWORDS": ("outpost-users", "passwords"),
    "OUTPOST_REDIS_PASSWORD": ("outpost-redis", "password"),
    "OUTPOST_REDIS_SENTINEL_PASSWORD": ("outpost-redis", "sentinel-password"),  # only in the Sentinel modes
}
KNOBS = ("containerConcurrency:", "timeoutSeconds:", "autoscaling.knative.dev/")


def services(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d
        for docs in manifests.values()
        for d in docs
        if d["apiVersion"] == "serving.knative.dev/v1" and d["kind"] == "Service"
    }


def all_docs(manifests: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [d for docs in manifests.values() for d in docs]


def test_one_file_per_function(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert set(services(manifests)) == set(FUNCTIONS)
    for name in FUNCTIONS:
        assert [d["metadata"]["name"] for d in manifests[f"{name}.yaml"]] == [name]


def test_custom_resources_match_their_crds(manifests: dict[str, list[dict[str, Any]]], crd_schemas: Any) -> None:
    custom = [d for d in all_docs(manifests) if not is_core(d)]
    assert {d["kind"] for d in custom} == {"Service", "ApiServerSource", "PingSource", "Broker", "Trigger"}
    errors = [e for d in custom for e in cr_errors(d, crd_schemas)]
    assert not errors, "\n".join(errors)


def test_core_objects_are_valid(manifests: dict[str, list[dict[str, Any]]]) -> None:
    core = [d for d in all_docs(manifests) if is_core(d)]
    assert {d["kind"] for d in core} == {"ServiceAccount", "Role", "RoleBinding"}
    errors = [e for d in core for e in core_errors(d)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_services_follow_the_knative_webhook_rules(manifests: dict[str, list[dict[str, Any]]], name: str) -> None:
    ksvc = services(manifests)[name]
    assert knative_service_errors(ksvc) == []
    spec = ksvc["spec"]["template"]["spec"]
    assert spec["timeoutSeconds"] <= 600 and spec["containerConcurrency"] > 0


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_target_account_and_environment(manifests: dict[str, list[dict[str, Any]]], name: str) -> None:
    source, target, account = FUNCTIONS[name]
    spec = services(manifests)[name]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["FUNCTION_TARGET"]["value"] == target
    assert env["FUNCTION_SOURCE"]["value"] == source
    assert (REPO / "functions" / Path(source).parent.name).is_dir()
    assert spec["serviceAccountName"] == account
    refs = {
        n: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for n, e in env.items()
        if "valueFrom" in e
    }
    # The functions that serve /metrics get its bearer token (chart functions.metrics); the others none.
    metrics = {"OUTPOST_METRICS_TOKEN": ("outpost-metrics", "token")} if name in PUBLIC else {}
    assert refs == SECRET_ENV | metrics
    if metrics:
        assert env["OUTPOST_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["OUTPOST_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert container["envFrom"] == [{"configMapRef": {"name": "outpost-env"}}]
    assert container["volumeMounts"] == [{"name": "config", "mountPath": "/etc/outpost", "readOnly": True}]
    assert spec["volumes"] == [{"name": "config", "configMap": {"name": "outpost-config"}}]
    assert container["securityContext"]["runAsNonRoot"] is True
    # gunicorn's UvicornWorker trusts no X-Forwarded-For; OUTPOST_TRUSTED_PROXIES alone decides.
    assert env["FORWARDED_ALLOW_IPS"] == {"name": "FORWARDED_ALLOW_IPS", "value": ""}
    probe = container.get("readinessProbe")
    # The API functions answer GET /ping; the event receivers take CloudEvents only.
    assert (probe == {"httpGet": {"path": "/ping"}}) == (name in PUBLIC)


def test_scaling_policy(manifests: dict[str, list[dict[str, Any]]]) -> None:
    scale = {
        name: int(ksvc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"])
        for name, ksvc in services(manifests).items()
    }
    assert scale.pop("outpost-poll") >= 1  # hubs poll constantly: warm
    assert set(scale.values()) == {0}  # everything else scales to zero
    # The API's warm requests never pass the activator: the hop count of trustedProxies holds.
    for name in PUBLIC:
        annotations = services(manifests)[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["autoscaling.knative.dev/target-burst-capacity"] == "0", name


def test_services_are_cluster_local_and_labelled(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for name, ksvc in services(manifests).items():
        labels = ksvc["metadata"]["labels"]
        assert labels["networking.knative.dev/visibility"] == "cluster-local"
        pod_labels = ksvc["spec"]["template"]["metadata"]["labels"]
        assert pod_labels.items() <= labels.items()
        assert pod_labels == {
            "app.kubernetes.io/name": "jupyterhub-outpost",
            "app.kubernetes.io/instance": "outpost",
            "app.kubernetes.io/component": name.removeprefix("outpost-"),
        }


@pytest.mark.parametrize("path", sorted(KNATIVE.glob("outpost-*.yaml")), ids=lambda p: p.name)
def test_every_tuning_knob_is_commented(path: Path) -> None:
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if any(knob in line for knob in KNOBS):
            assert lines[number - 1].strip().startswith("#"), f"{path.name}:{number + 1} has no comment"


def test_eventing_is_wired_to_the_receivers(manifests: dict[str, list[dict[str, Any]]]) -> None:
    docs = manifests["eventing.yaml"]
    ksvcs = services(manifests)

    def target(ref_holder: dict[str, Any]) -> tuple[str, str]:
        ref = ref_holder["ref"]
        assert (ref["apiVersion"], ref["kind"]) == ("serving.knative.dev/v1", "Service")
        assert ref["name"] in ksvcs and ref["name"] not in PUBLIC
        return ref["name"], ref_holder.get("uri", "")

    ping = one_object(docs, "PingSource")
    assert ping["spec"]["schedule"] == "* * * * *"
    assert target(ping["spec"]["sink"]) == ("outpost-timer", "")
    pods = one_object(docs, "ApiServerSource")
    assert target(pods["spec"]["sink"]) == ("outpost-pod-status", "")
    assert pods["spec"]["mode"] == "Reference"
    assert [(r["apiVersion"], r["kind"]) for r in pods["spec"]["resources"]] == [("v1", "Pod")]
    account = pods["spec"]["serviceAccountName"]
    one_object(docs, "ServiceAccount", account)
    role = one_object(docs, "Role", account)
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = one_object(docs, "RoleBinding", account)
    assert binding["roleRef"]["name"] == account and binding["subjects"][0]["name"] == account

    broker = one_object(docs, "Broker")
    events_timeout = ksvcs["outpost-events"]["spec"]["template"]["spec"]["timeoutSeconds"]
    triggers = {t["spec"]["filter"]["attributes"]["type"]: t for t in find_objects(docs, "Trigger")}
    assert set(triggers) == {
        "org.jupyterhub.outpost.start.requested",
        "org.jupyterhub.outpost.stop.requested",
    }
    for holder in (broker, *triggers.values()):
        delivery = holder["spec"]["delivery"]
        assert target(delivery["deadLetterSink"]) == ("outpost-events", "/dead-letter")
        assert delivery["retry"] >= 1
        seconds = int(re.fullmatch(r"PT(\d+)S", delivery["timeout"]).group(1))  # type: ignore[union-attr]
        assert seconds <= events_timeout, "the broker would retry a delivery the receiver still works on"
    for event_type, path in (("start", "/start"), ("stop", "/stop")):
        trigger = triggers[f"org.jupyterhub.outpost.{event_type}.requested"]
        assert trigger["spec"]["broker"] == broker["metadata"]["name"]
        assert target(trigger["spec"]["subscriber"]) == ("outpost-events", path)


# --- the checkers themselves must catch what they claim to catch -------------------------------


def _mutated(manifests: dict[str, list[dict[str, Any]]], change: Any) -> dict[str, Any]:
    ksvc = copy.deepcopy(services(manifests)["outpost-poll"])
    change(ksvc, ksvc["spec"]["template"]["spec"]["containers"][0])
    return ksvc


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda k, c: c["env"].append({"name": "PORT", "value": "9000"}), "env PORT is reserved"),
        (lambda k, c: c["env"].append({"name": "K_REVISION", "value": "x"}), "env K_REVISION is reserved"),
        (lambda k, c: c["ports"].append({"containerPort": 9100}), "at most one container port"),
        (lambda k, c: c["ports"][0].update(name="http"), "port name 'http'"),
        (lambda k, c: c["ports"][0].update(containerPort=8012), "reserved by the queue-proxy"),
        (lambda k, c: k["spec"]["template"]["spec"].update(timeoutSeconds=601), "timeoutSeconds 601"),
        (
            lambda k, c: k["spec"]["template"]["spec"].update(containerConcurrency=1001),
            "containerConcurrency 1001",
        ),
        (lambda k, c: c["readinessProbe"]["httpGet"].update(port=9000), "readinessProbe port"),
        (lambda k, c: c["readinessProbe"].update(tcpSocket={}), "exactly one handler"),
        (
            lambda k, c: k["spec"]["template"]["spec"]["containers"].append(dict(c)),
            "exactly one serving container",
        ),
        (
            lambda k, c: k["spec"]["template"]["metadata"]["annotations"].update(
                {"autoscaling.knative.dev/min-scale": "30"}
            ),
            "min-scale 30 above max-scale 20",
        ),
        (
            lambda k, c: k["spec"]["template"]["metadata"]["annotations"].update(
                {"autoscaling.knative.dev/max-scale": 5}
            ),
            "must be a quoted non-negative integer",
        ),
        (
            lambda k, c: k["metadata"].update(annotations={"autoscaling.knative.dev/min-scale": "1"}),
            "belongs on spec.template.metadata.annotations",
        ),
    ],
)
def test_webhook_checker_catches(manifests: dict[str, list[dict[str, Any]]], change: Any, message: str) -> None:
    errors = knative_service_errors(_mutated(manifests, change))
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda k, c: k["spec"]["template"]["spec"].update(timeoutSecs=60), "'timeoutSecs' was unexpected"),
        (
            lambda k, c: k["spec"]["template"]["spec"].update(containerConcurrency="ten"),
            "'ten' is not of type",
        ),
        (lambda k, c: c["ports"][0].update(portz=1), "'portz' was unexpected"),
        (lambda k, c: c.update(livenessprobe={}), "'livenessprobe' was unexpected"),
    ],
)
def test_crd_checker_catches(
    manifests: dict[str, list[dict[str, Any]]], crd_schemas: Any, change: Any, message: str
) -> None:
    errors = cr_errors(_mutated(manifests, change), crd_schemas)
    assert any(message in e for e in errors), errors


def test_crd_checker_catches_eventing_typos(manifests: dict[str, list[dict[str, Any]]], crd_schemas: Any) -> None:
    ping = copy.deepcopy(one_object(manifests["eventing.yaml"], "PingSource"))
    ping["spec"]["schedul"] = ping["spec"].pop("schedule")
    assert any("'schedul' was unexpected" in e for e in cr_errors(ping, crd_schemas))
    broker = copy.deepcopy(one_object(manifests["eventing.yaml"], "Broker"))
    broker["spec"]["delivry"] = broker["spec"].pop("delivery")
    assert any("'delivry' was unexpected" in e for e in cr_errors(broker, crd_schemas))
    assert cr_errors({"apiVersion": "serving.knative.dev/v2", "kind": "Service", "metadata": {}}, crd_schemas)


@pytest.mark.parametrize("service", sorted(FUNCTIONS))
def test_each_service_runs_a_function_its_folder_defines(service: str) -> None:
    """FUNCTION_SOURCE is a deployable's folder under functions/ (the image's /app), and defines FUNCTION_TARGET."""
    source, target, _ = FUNCTIONS[service]
    main = REPO / source.removeprefix("/app/")
    assert main.parent.parent == REPO / "functions" and main.is_file()
    assert re.search(rf"^async def {target}\(", main.read_text(), re.MULTILINE)

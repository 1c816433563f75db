"""What the rendered objects must say: labels, RBAC, routing, environment, keys, checksums, NOTES."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml
from k8s_checks import find_objects, load_documents, one_object

from outpost.backends.base import load_backend_config
from outpost.backends.slurm.options import SlurmBackend
from outpost.proxies import TrustedProxies
from outpost.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "jupyterhub-outpost"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
ISTIO_VALUES = CHART / "ci" / "istio-values.yaml"
SENTINEL_VALUES = CHART / "ci" / "sentinel-values.yaml"
EXTERNAL_SENTINEL_VALUES = CHART / "ci" / "external-sentinel-values.yaml"

WORKLOADS = ("Deployment", "StatefulSet")
# The environment contract of the application (settings names of lib/outpost/settings.py included).
ROOT = Path(__file__).resolve().parents[2]
DAEMON_ENV = {
    "OUTPOST_CRYPT_KEY",
    "OUTPOST_HUB_USERNAMES",
    "OUTPOST_HUB_PASSWORDS",
    "OUTPOST_REDIS_PASSWORD",
    "OUTPOST_SSH_PORT",
    "OUTPOST_SSH_USERNAME",
    "OUTPOST_SSH_HOST_KEY",
}
SHARED_ENV = {
    "OUTPOST_CONFIG",
    "OUTPOST_BACKEND_CONFIG",
    "OUTPOST_BACKEND",
    "OUTPOST_TRUSTED_PROXIES",
    "OUTPOST_NAMESPACE",
    "OUTPOST_REDIS_URL",
    "OUTPOST_EVENTS_SINK",
}
ALLOWED_RESOURCES = {"pods", "pods/log", "services", "secrets", "events"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    "values",
    [(), (CI_VALUES,), (ISTIO_VALUES,), (SENTINEL_VALUES,), (EXTERNAL_SENTINEL_VALUES,)],
    ids=["defaults", "ci", "istio", "sentinel", "external-sentinel"],
)
def test_selectors_labels_and_ports_agree(render: Any, values: tuple[Path, ...]) -> None:
    docs = render(*values)
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert workloads
    for workload in workloads:
        selector = workload["spec"]["selector"]["matchLabels"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items(), workload["metadata"]["name"]
        assert selector.items() <= workload["metadata"]["labels"].items()
    for service in find_objects(docs, "Service"):
        targets = [
            w
            for w in workloads
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} workloads"
        port_names = {p["name"] for c in pod_spec(targets[0])["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "jupyterhub-outpost"
        assert labels["app.kubernetes.io/instance"] == "outpost"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("values", [CI_VALUES, SENTINEL_VALUES], ids=["ci", "sentinel"])
def test_workloads_are_hardened(render: Any, values: Path) -> None:
    for workload in (d for d in render(values) if d["kind"] in WORKLOADS):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("values", [(), (CI_VALUES,)], ids=["same-namespace", "pods-elsewhere"])
def test_rbac_is_least_privilege(render: Any, values: tuple[Path, ...]) -> None:
    docs = render(*values)
    assert not find_objects(docs, "ClusterRole") and not find_objects(docs, "ClusterRoleBinding")
    pods_namespace = "jupyter-users" if values else "outpost"
    roles = {r["metadata"]["name"]: r for r in find_objects(docs, "Role")}
    for role in roles.values():
        assert role["metadata"]["namespace"] == pods_namespace
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""]
            assert set(rule["resources"]) <= ALLOWED_RESOURCES
    reader_verbs = {v for rule in roles["outpost-functions-reader"]["rules"] for v in rule["verbs"]}
    assert not reader_verbs & WRITE_VERBS
    reader = {r: set(rule["verbs"]) for rule in roles["outpost-functions-reader"]["rules"] for r in rule["resources"]}
    assert reader["secrets"] == {"get"}  # a poll re-adopts from one identity Secret it names; it never lists them
    writer = {r: set(rule["verbs"]) for rule in roles["outpost-functions"]["rules"] for r in rule["resources"]}
    assert {"create", "delete"} <= writer["pods"] and "events" in writer and not writer["events"] & WRITE_VERBS
    for binding in find_objects(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] in roles
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == "outpost"
    if values:  # the pod watcher of knative/eventing.yaml may read the other namespace's pods
        watcher = one_object(docs, "RoleBinding", "outpost-pod-watcher")
        assert watcher["subjects"][0]["name"] == "outpost-pod-watcher"
    daemon = one_object(docs, "ServiceAccount", "outpost-sshd")
    assert daemon["automountServiceAccountToken"] is False
    assert not [b for b in find_objects(docs, "RoleBinding") if b["subjects"][0]["name"] == "outpost-sshd"]


def test_http_route_splits_by_method_and_path(render: Any) -> None:
    docs = render(CI_VALUES)
    route = one_object(docs, "HTTPRoute")
    assert route["spec"]["hostnames"] == ["outpost.example.org", "outpost-api.example.org"]
    blocked = [r for r in route["spec"]["rules"] if "backendRefs" not in r]
    assert [r["matches"][0]["path"]["value"] for r in blocked] == ["/metrics", "/internal"]
    targets = {}
    for rule in route["spec"]["rules"]:
        if "backendRefs" not in rule:
            continue
        (match,) = rule["matches"]
        (rewrite,) = [f["urlRewrite"]["hostname"] for f in rule["filters"] if f["type"] == "URLRewrite"]
        targets[(match.get("method"), match["path"]["value"])] = rewrite
        assert rule["backendRefs"] == [{"name": "knative-local-gateway", "namespace": "istio-system", "port": 80}]
        assert rule["timeouts"] == {"request": "300s"}
    assert targets == {
        ("POST", "/services"): "outpost-start.outpost.svc.cluster.local",
        ("DELETE", "/services"): "outpost-stop.outpost.svc.cluster.local",
        (None, "/"): "outpost-poll.outpost.svc.cluster.local",
    }
    grant = one_object(docs, "ReferenceGrant")
    assert grant["metadata"]["namespace"] == "istio-system"
    assert grant["spec"]["from"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "outpost"}
    ]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": "knative-local-gateway"}]
    # Every listener the route names exists on the chart's Gateway.
    listeners = {lst["name"] for lst in one_object(docs, "Gateway")["spec"]["listeners"]}
    assert {ref["sectionName"] for ref in route["spec"]["parentRefs"]} <= listeners


def test_existing_gateway_is_used_as_given(render: Any) -> None:
    docs = render(
        CI_VALUES,
        sets=(
            "ingress.gatewayApi.parentRefs[0].name=public",
            "ingress.gatewayApi.parentRefs[0].namespace=gateways",
        ),
    )
    assert not find_objects(docs, "Gateway")
    route = one_object(docs, "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert route["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-cluster-issuer"


def test_istio_virtual_service(render: Any) -> None:
    docs = render(ISTIO_VALUES)
    assert not find_objects(docs, "HTTPRoute") and not find_objects(docs, "ReferenceGrant")
    service = one_object(docs, "VirtualService")
    assert service["apiVersion"] == "networking.istio.io/v1"
    spec = service["spec"]
    assert spec["hosts"] == ["outpost.example.org"] and spec["gateways"] == ["istio-system/public-gateway"]
    blocked, start, stop, poll = spec["http"]
    assert blocked == {"match": [{"uri": {"prefix": "/metrics"}}], "directResponse": {"status": 404}}
    assert start["match"] == [{"method": {"exact": "POST"}, "uri": {"prefix": "/services"}}]
    assert stop["match"] == [{"method": {"exact": "DELETE"}, "uri": {"prefix": "/services"}}]
    assert "match" not in poll
    for rule, fn in ((start, "start"), (stop, "stop"), (poll, "poll")):
        assert rule["rewrite"] == {"authority": f"outpost-{fn}.outpost.svc.cluster.local"}
        assert rule["route"] == [
            {
                "destination": {
                    "host": "knative-local-gateway.istio-system.svc.cluster.local",
                    "port": {"number": 80},
                }
            }
        ]


def test_daemon_environment_follows_the_contract(render: Any) -> None:
    docs = render(CI_VALUES)
    container = pod_spec(one_object(docs, "Deployment", "outpost-sshd"))["containers"][0]
    assert container["name"] == "sshd"  # the daemon first, upstream's sidecars after it
    extra = {e["name"] for e in yaml.safe_load(CI_VALUES.read_text())["extraEnvVars"]}
    env = {e["name"]: e for e in container["env"] if e["name"] not in extra}
    assert set(env) == DAEMON_ENV
    refs = {
        name: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for name, e in env.items()
        if "valueFrom" in e
    }
    assert refs == {
        "OUTPOST_CRYPT_KEY": ("outpost-cryptkey", "secret_key"),
        "OUTPOST_HUB_USERNAMES": ("outpost-users", "usernames"),
        "OUTPOST_HUB_PASSWORDS": ("outpost-users", "passwords"),
        "OUTPOST_REDIS_PASSWORD": ("outpost-redis", "password"),
    }
    assert env["OUTPOST_SSH_PORT"]["value"] == "2222"
    assert env["OUTPOST_SSH_HOST_KEY"]["value"] == "/etc/outpost/ssh/ssh_host_key"
    assert [p["containerPort"] for p in container["ports"]] == [2222, 9090]
    env_from = container["envFrom"][0]
    shared = one_object(docs, "ConfigMap", env_from["configMapRef"]["name"])["data"]
    assert set(shared) == SHARED_ENV
    assert shared["OUTPOST_NAMESPACE"] == "jupyter-users"
    assert shared["OUTPOST_REDIS_URL"] == "redis://outpost-redis.outpost.svc.cluster.local:6379/0"
    assert shared["OUTPOST_EVENTS_SINK"] == "http://broker-ingress.knative-eventing.svc.cluster.local/outpost/outpost"
    # The projected volume puts config.yaml, outpost_config.py and the host key where the env says.
    volume = pod_spec(one_object(docs, "Deployment", "outpost-sshd"))["volumes"][0]
    sources = volume["projected"]["sources"]
    assert sources[0]["configMap"]["name"] == "outpost-config"
    assert sources[1]["secret"]["items"] == [{"key": "ssh_host_key", "path": "ssh/ssh_host_key", "mode": 0o440}]


def test_config_file_holds_the_seed_keys_and_settings(render: Any) -> None:
    docs = render(CI_VALUES)
    data = one_object(docs, "ConfigMap", "outpost-config")["data"]
    config = yaml.safe_load(data["config.yaml"])
    values = yaml.safe_load(CI_VALUES.read_text())
    assert {k: config[k] for k in ("flavors", "users", "hubs", "sshPublicKeys")} == {
        k: values[k] for k in ("flavors", "users", "hubs", "sshPublicKeys")
    }
    assert {k: config[k] for k in values["settings"]} == values["settings"]
    assert set(config) == {"flavors", "users", "hubs", "sshPublicKeys", *values["settings"]}
    assert data["outpost_config.py"] == values["outpostConfig"]


@pytest.mark.parametrize(
    ("values", "sets", "expected"),
    [
        ((), (), "3"),
        ((CI_VALUES,), (), "127.0.0.0/8, ::1/128, 10.244.0.0/16"),
        ((), ("functions.trustedProxies=2",), "2"),
    ],
)
def test_trusted_proxies_reach_the_functions_as_a_valid_setting(
    render: Any, values: tuple[Path, ...], sets: tuple[str, ...], expected: str
) -> None:
    shared = one_object(render(*values, sets=sets), "ConfigMap", "outpost-env")["data"]
    assert shared["OUTPOST_TRUSTED_PROXIES"] == expected
    TrustedProxies.parse(expected)  # what the functions will parse at start


REDIS_COMPONENTS = {"redis", "redis-node"}


def redis_objects(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every object that runs or exposes Redis (the password Secret is the clients' configuration)."""
    return [
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if d["metadata"]["labels"]["app.kubernetes.io/component"] in REDIS_COMPONENTS and d["kind"] != "Secret"
    ]


def test_external_redis_and_no_events(render: Any) -> None:
    docs = render(ISTIO_VALUES)
    assert redis_objects(docs) == []
    shared = one_object(docs, "ConfigMap", "outpost-env")["data"]
    assert shared["OUTPOST_REDIS_URL"] == "rediss://redis.databases.svc.cluster.local:6380/2"
    assert "OUTPOST_EVENTS_SINK" not in shared
    secret = one_object(docs, "Secret", "outpost-redis")
    assert secret["stringData"] == {"password": "external-password"}


def test_bundled_redis_has_password_and_persistence(render: Any) -> None:
    docs = render(CI_VALUES)
    secret = one_object(docs, "Secret", "outpost-redis")["stringData"]
    assert secret["password"] == "ci-password-not-secret"
    assert 'requirepass "ci-password-not-secret"' in secret["redis.conf"]
    assert "appendonly yes" in secret["redis.conf"]
    redis = one_object(docs, "StatefulSet", "outpost-redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "standard"
    generated = one_object(render(), "Secret", "outpost-redis")["stringData"]["password"]
    assert len(generated) == 32 and generated.isalnum()


@pytest.mark.parametrize("key_type,algorithm", [("ed25519", "ssh-ed25519"), ("rsa", "ssh-rsa")])
def test_host_key_is_generated_and_readable(render: Any, key_type: str, algorithm: str) -> None:
    docs = render(sets=(f"sshd.hostKey.type={key_type}",))
    secret = one_object(docs, "Secret", "outpost-ssh-hostkey")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = asyncssh.import_private_key(base64.b64decode(secret["data"]["ssh_host_key"]))
    assert key.get_algorithm() == algorithm


def test_existing_host_key_secret_is_mounted_instead(render: Any) -> None:
    docs = render(ISTIO_VALUES)
    assert not find_objects(docs, "Secret", "outpost-ssh-hostkey")
    (volume,) = pod_spec(one_object(docs, "Deployment", "outpost-sshd"))["volumes"]
    assert volume["projected"]["sources"][1]["secret"]["name"] == "my-ssh-hostkey"


def test_config_change_rolls_the_daemon(render: Any) -> None:
    def checksums(*sets: str) -> dict[str, str]:
        annotations = one_object(render(sets=sets), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return {k: v for k, v in annotations.items() if k.startswith("checksum/")}

    base = checksums()
    assert set(base) == {"checksum/config", "checksum/secret"}
    assert checksums("flavors.small.max=3")["checksum/config"] != base["checksum/config"]
    assert checksums("outpostConfig=c.X.y = 1")["checksum/config"] != base["checksum/config"]
    assert checksums("redis.password=changed")["checksum/secret"] != base["checksum/secret"]
    assert checksums() == base


@pytest.mark.parametrize(
    "sets,expected",
    [
        (
            (),
            {
                "type": "ClusterIP",
                "ports": [{"name": "ssh", "port": 22, "targetPort": "ssh", "protocol": "TCP"}],
            },
        ),
        (
            ("servicessh.type=NodePort", "servicessh.nodePort=30022", "servicessh.loadBalancerIP=192.0.2.1"),
            {
                "type": "NodePort",
                "ports": [{"name": "ssh", "port": 22, "targetPort": "ssh", "protocol": "TCP", "nodePort": 30022}],
            },
        ),
        (
            ("servicessh.type=LoadBalancer", "servicessh.port=2022", "servicessh.loadBalancerIP=192.0.2.1"),
            {
                "type": "LoadBalancer",
                "loadBalancerIP": "192.0.2.1",
                "ports": [{"name": "ssh", "port": 2022, "targetPort": "ssh", "protocol": "TCP"}],
            },
        ),
    ],
    ids=["cluster-ip", "node-port", "load-balancer"],
)
def test_ssh_service_honours_servicessh(render: Any, sets: tuple[str, ...], expected: dict[str, Any]) -> None:
    spec = one_object(render(sets=sets), "Service", "outpost-sshd")["spec"]
    assert {k: v for k, v in spec.items() if k != "selector"} == {**expected, "sessionAffinity": "ClientIP"}


def test_ssh_service_annotations(render: Any) -> None:
    service = one_object(render(CI_VALUES), "Service", "outpost-sshd")
    assert service["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/openstack-internal-load-balancer": "false"
    }
    assert service["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]


def test_notes_print_the_spawner_settings(run_helm: Any) -> None:
    result = run_helm("install", "outpost", CHART, "--dry-run=client", "--namespace", "outpost", "-f", CI_VALUES)
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    for line in (
        'c.OutpostSpawner.request_url = "https://outpost.example.org/services"',
        'c.OutpostSpawner.ssh_node = "192.0.2.10"',
        "c.OutpostSpawner.ssh_port = 22",
        'c.OutpostSpawner.ssh_username = "jhuboutpost"',
        "knative/deploy.sh --namespace outpost",
        "get secret outpost-users",
    ):
        assert line in notes
    assert "WARNING" not in notes


def test_notes_name_the_release_for_deploy_sh(run_helm: Any) -> None:
    result = run_helm("install", "jh", CHART, "--dry-run=client", "--set", "cryptSecret=mykey")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "knative/deploy.sh --namespace default --release jh --image" in notes
    assert '"jh-outpost-*"' in notes
    assert "CRYPT_SECRET=mykey" in notes
    assert 'ssh_node = "jh-outpost-sshd.default.svc.cluster.local"' in notes


def test_the_metrics_token_is_generated_given_or_borrowed(render: Any) -> None:
    """The functions' /metrics answers only this token; it is generated once (read back on upgrades)."""
    generated = one_object(render(), "Secret", "outpost-metrics")["stringData"]["token"]
    assert len(generated) == 40 and generated.isalnum()
    assert not find_objects(render(), "ServiceMonitor")  # off by default: the CRD may not exist
    given = render(CI_VALUES)
    assert one_object(given, "Secret", "outpost-metrics")["stringData"]["token"] == "ci-metrics-token-0123456789"
    borrowed = render(
        sets=("functions.metrics.existingSecret=my-metrics", "functions.metrics.serviceMonitor.enabled=true")
    )
    assert not find_objects(borrowed, "Secret", "outpost-metrics")
    endpoint = one_object(borrowed, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "my-metrics", "key": "token"}}


def test_the_service_monitor_scrapes_the_functions_with_the_token(render: Any) -> None:
    monitor = one_object(render(CI_VALUES), "ServiceMonitor")
    assert (
        monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["labels"]["release"] == "prometheus"
    )
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"] == {"networking.internal.knative.dev/serviceType": "Private"}
    assert selector["matchExpressions"] == [
        {
            "key": "serving.knative.dev/service",
            "operator": "In",
            "values": ["outpost-start", "outpost-poll", "outpost-stop"],
        }
    ]
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s",
         "authorization": {"type": "Bearer", "credentials": {"name": "outpost-metrics", "key": "token"}}}
    ]  # fmt: skip


def test_chart_provides_what_knative_references(render: Any) -> None:
    """Every ConfigMap, Secret and ServiceAccount the knative/ manifests name is rendered by default."""
    rendered = {(d["kind"], d["metadata"]["name"]) for d in render()}
    referenced: set[tuple[str, str]] = set()
    for path in sorted((REPO / "knative").glob("outpost-*.yaml")):
        (ksvc,) = load_documents(path.read_text())
        spec = ksvc["spec"]["template"]["spec"]
        referenced.add(("ServiceAccount", spec["serviceAccountName"]))
        referenced |= {("ConfigMap", v["configMap"]["name"]) for v in spec["volumes"]}
        (container,) = spec["containers"]
        referenced |= {("ConfigMap", e["configMapRef"]["name"]) for e in container["envFrom"]}
        referenced |= {("Secret", e["valueFrom"]["secretKeyRef"]["name"]) for e in container["env"] if "valueFrom" in e}
    seed_secrets = {
        ("Secret", "outpost-cryptkey"),
        ("Secret", "outpost-users"),
    }  # created by the administrator
    assert referenced - seed_secrets <= rendered
    assert seed_secrets <= referenced


def test_every_variable_the_deployment_sets_is_a_setting() -> None:
    """The env contract is what `outpost.settings.Settings` reads (OUTPOST_CONFIG names the YAML file)."""
    knative = {
        line.split("name:", 1)[1].strip()
        for path in (ROOT / "knative").glob("*.yaml")
        for line in path.read_text().splitlines()
        if "name: OUTPOST_" in line
    }
    for name in sorted((DAEMON_ENV | SHARED_ENV | knative) - {"OUTPOST_CONFIG"}):
        assert name.removeprefix("OUTPOST_").lower() in Settings.model_fields, name


def sentinel_hosts(count: int) -> str:
    domain = "outpost-redis-headless.outpost.svc.cluster.local"
    return ",".join(f"outpost-redis-node-{i}.{domain}:26379" for i in range(count))


def test_sentinel_mode_runs_nodes_and_sentinels_with_failover_safeguards(render: Any) -> None:
    docs = render(SENTINEL_VALUES)
    assert sorted(redis_objects(docs)) == [
        ("ConfigMap", "outpost-redis-node-scripts"),
        ("PodDisruptionBudget", "outpost-redis-node"),
        ("Service", "outpost-redis-headless"),
        ("StatefulSet", "outpost-redis-node"),
    ]
    node = one_object(docs, "StatefulSet", "outpost-redis-node")
    selector = node["spec"]["selector"]["matchLabels"]
    assert node["spec"]["replicas"] == 3 and node["spec"]["serviceName"] == "outpost-redis-headless"
    spec = pod_spec(node)
    assert [c["name"] for c in spec["containers"]] == ["redis", "sentinel"]
    assert [c["command"][-1] for c in spec["containers"]] == ["/data/conf/redis.conf", "--sentinel"]
    (init,) = spec["initContainers"]
    assert init["command"] == ["sh", "/scripts/init.sh"]
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    host = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}
    assert term["podAffinityTerm"] == host
    hard = pod_spec(one_object(render(SENTINEL_VALUES, sets=("redis.sentinel.antiAffinity=hard",)), "StatefulSet"))
    (required,) = hard["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["labelSelector"]["matchLabels"] == selector
    budget = one_object(docs, "PodDisruptionBudget", "outpost-redis-node")["spec"]
    assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    headless = one_object(docs, "Service", "outpost-redis-headless")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert headless["selector"] == selector
    # The passwords come from the chart's Secret, as files: never on a command line or in the env of Redis.
    (secrets_volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert secrets_volume["secret"]["secretName"] == "outpost-redis"
    stored = one_object(docs, "Secret", "outpost-redis")["stringData"]
    assert set(stored) == {"password", "sentinel-password"} and stored["password"] != stored["sentinel-password"]
    # Persistence: one claim per node holding the AOF and the config files Sentinel rewrites.
    persistent = one_object(render(SENTINEL_VALUES, sets=("redis.persistence.enabled=true",)), "StatefulSet")
    (claim,) = persistent["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    init_sh = one_object(docs, "ConfigMap", "outpost-redis-node-scripts")["data"]["init.sh"]
    for line in (
        "appendonly yes",
        "replica-announce-ip ${SELF}",
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        "sentinel announce-ip ${SELF}",
        "min-replicas-to-write ${MIN_REPLICAS}",
        "SENTINEL get-master-addr-by-name",
    ):
        assert line in init_sh, line
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["DOMAIN"] == "outpost-redis-headless.outpost.svc.cluster.local" and env["MIN_REPLICAS"] == "1"


def test_init_script_is_valid_shell(render: Any, tmp_path: Path) -> None:
    data = one_object(render(SENTINEL_VALUES), "ConfigMap", "outpost-redis-node-scripts")["data"]
    for name in ("init.sh", "ping.sh"):
        script = tmp_path / name
        script.write_text(data[name])
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            SENTINEL_VALUES,
            {
                "OUTPOST_REDIS_SENTINELS": sentinel_hosts(3),
                "OUTPOST_REDIS_SENTINEL_MASTER": "outpost",
                "OUTPOST_REDIS_MIN_REPLICAS": "1",
            },
        ),
        (
            EXTERNAL_SENTINEL_VALUES,
            {
                "OUTPOST_REDIS_SENTINELS": (
                    "sentinel-0.redis.databases.svc.cluster.local:26379,10.0.0.7:26379,[fd00::7]:26379"
                ),
                "OUTPOST_REDIS_SENTINEL_MASTER": "mymaster",
                "OUTPOST_REDIS_MIN_REPLICAS": "1",
            },
        ),
        (ISTIO_VALUES, {"OUTPOST_REDIS_URL": "rediss://redis.databases.svc.cluster.local:6380/2"}),
        ((), {"OUTPOST_REDIS_URL": "redis://outpost-redis.outpost.svc.cluster.local:6379/0"}),
    ],
    ids=["sentinel", "external-sentinel", "external-url", "standalone"],
)
def test_functions_and_daemon_reach_redis_as_the_mode_says(
    render: Any, values: Path | tuple[()], expected: dict[str, str]
) -> None:
    docs = render(*([values] if isinstance(values, Path) else []))
    shared = one_object(docs, "ConfigMap", "outpost-env")["data"]
    assert {k: v for k, v in shared.items() if k.startswith("OUTPOST_REDIS")} == expected
    (container,) = pod_spec(one_object(docs, "Deployment", "outpost-sshd"))["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["OUTPOST_REDIS_PASSWORD"]["name"] == "outpost-redis"
    if "OUTPOST_REDIS_SENTINELS" in expected:
        assert refs["OUTPOST_REDIS_SENTINEL_PASSWORD"] == {
            "name": "outpost-redis",
            "key": "sentinel-password",
            "optional": True,
        }
        secret = one_object(docs, "Secret", "outpost-redis")["stringData"]
        assert secret["sentinel-password"]
        if values == EXTERNAL_SENTINEL_VALUES:
            assert redis_objects(docs) == []
            assert secret == {"password": "external-password", "sentinel-password": "external-sentinel-password"}
    else:  # standalone renders exactly what it did before the modes existed
        assert ("OUTPOST_REDIS_SENTINEL_PASSWORD" in refs) == (values != ())
    # What the functions will parse at start: the names and values are Settings fields.
    settings = Settings.model_validate(
        {k.removeprefix("OUTPOST_").lower(): v for k, v in expected.items()}
        | {"crypt_key": "x" * 44, "hub_usernames": "a", "hub_passwords": "b"}
    )
    assert settings.redis_min_replicas == int(expected.get("OUTPOST_REDIS_MIN_REPLICAS", 0))


@pytest.mark.parametrize(("replicas", "budget"), [(1, False), (3, True)])
def test_ssh_daemon_replicas_get_a_budget_and_one_pod_per_hub(render: Any, replicas: int, budget: bool) -> None:
    docs = render(sets=(f"sshd.replicas={replicas}",))
    assert one_object(docs, "Deployment", "outpost-sshd")["spec"]["replicas"] == replicas
    service = one_object(docs, "Service", "outpost-sshd")["spec"]
    assert service["sessionAffinity"] == "ClientIP"
    budgets = find_objects(docs, "PodDisruptionBudget")
    assert [b["metadata"]["name"] for b in budgets] == (["outpost-sshd"] if budget else [])
    if budget:
        assert budgets[0]["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": service["selector"]}}


SLURM_SETS = (
    "backend.type=slurm",
    "backend.slurm.restUrl=http://slurmrestd.hpc.example.org:6820",
    "backend.slurm.tokenSecret=outpost-slurm-jwt",
    "outpostConfig=c.SlurmBackend.job_user = 'jupyter'\nc.SlurmBackend.partition = 'interactive'\n",
)


def test_slurm_backend_reaches_slurmrestd_with_the_jwt_of_a_secret(render: Any, tmp_path: Path) -> None:
    """backend.type slurm: slurmrestd's URL and user head outpost_config.py (the administrator's lines follow
    and may change them), and the functions get the JWT as SLURM_JWT from the Secret, never in a ConfigMap."""
    docs = render(sets=SLURM_SETS)
    assert one_object(docs, "ConfigMap", "outpost-env")["data"]["OUTPOST_BACKEND"] == "slurm"
    config_file = tmp_path / "outpost_config.py"
    config_file.write_text(one_object(docs, "ConfigMap", "outpost-config")["data"]["outpost_config.py"])
    options = SlurmBackend(config=load_backend_config(config_file))  # as the functions read it
    assert (options.rest_url, options.rest_user, options.rest_api) == (
        "http://slurmrestd.hpc.example.org:6820", "slurm", "v0.0.38",
    )  # fmt: skip
    assert (options.job_user, options.partition) == ("jupyter", "interactive")
    extras = one_object(docs, "ConfigMap", "outpost-extras")["data"]
    env = [json.loads(line) for line in extras["env"].splitlines()]
    assert {"name": "SLURM_JWT", "valueFrom": {"secretKeyRef": {"name": "outpost-slurm-jwt", "key": "token"}}} in env
    assert "SLURM_JWT" not in one_object(docs, "ConfigMap", "outpost-env")["data"]
    assert "SLURM_JWT" not in one_object(render(), "ConfigMap", "outpost-extras")["data"]["env"]


@pytest.mark.parametrize(
    "drop, message",
    [
        ("backend.slurm.tokenSecret", "backend.type slurm needs backend.slurm.restUrl"),
        ("backend.slurm.restUrl", "backend.type slurm needs backend.slurm.restUrl"),
        ("outpostConfig", "backend.type slurm needs outpostConfig with c.SlurmBackend.job_user"),
    ],
)
def test_slurm_backend_without_what_it_needs_is_refused(run_helm: Any, drop: str, message: str) -> None:
    sets = [s for s in SLURM_SETS if not s.startswith(drop + "=")]
    result = run_helm("template", "outpost", CHART, *[arg for s in sets for arg in ("--set", s)])
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_slurm_backend_needs_the_job_user_in_outpost_config(run_helm: Any) -> None:
    sets = [*SLURM_SETS[:3], "outpostConfig=c.SlurmBackend.partition = 'interactive'\n"]
    result = run_helm("template", "outpost", CHART, *[arg for s in sets for arg in ("--set", s)])
    assert result.returncode != 0
    assert "needs c.SlurmBackend.job_user in outpostConfig" in result.stderr

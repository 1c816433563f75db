"""The pure builders: dict equality and schema validity."""

from __future__ import annotations

import base64
import copy
from typing import Any

import kubernetes_validate
import pytest
from traitlets.config import Config

from outpost.backends.kubernetes import manifests
from outpost.backends.kubernetes.manifests import KubernetesBackend, ServerNames
from outpost.models import ServiceId
from tests.backends.kubernetes.conftest import validate

SID = ServiceId("hubA", "srv", "1")
TARGET = ServerNames("ns", "jupyter-alice--srv", "jupyter-alice--srv", "jupyter-alice--srv.ns.svc.cluster.local")
LABELS = {
    "app.kubernetes.io/managed-by": "jupyterhub-outpost",
    "app.kubernetes.io/component": "singleuser-server",
    "outpost.jupyter.org/hub": "hubA",
    "hub.jupyter.org/username": "alice",
    "hub.jupyter.org/servername": "srv",
    "outpost.jupyter.org/start-id": "1",
}
ANNOTATIONS = {
    "outpost.jupyter.org/hub": "hubA",
    "outpost.jupyter.org/name": "srv",
    "outpost.jupyter.org/start-id": "1",
    "hub.jupyter.org/username": "alice",
}


def options(**values: Any) -> KubernetesBackend:
    config = Config()
    for key, value in values.items():
        setattr(config.KubernetesBackend, key, value)
    return KubernetesBackend(config=config)


def test_minimal_pod() -> None:
    pod = manifests.make_pod(
        options(), TARGET, LABELS, ANNOTATIONS, {"JUPYTERHUB_USER": "alice"}, ["JUPYTERHUB_API_TOKEN"], 8888, False
    )
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "jupyter-alice--srv", "namespace": "ns", "labels": LABELS, "annotations": ANNOTATIONS},
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": "quay.io/jupyterhub/singleuser:latest",
                    "args": ["jupyterhub-singleuser"],
                    "ports": [{"name": "notebook-port", "containerPort": 8888, "protocol": "TCP"}],
                    "env": [
                        {"name": "JUPYTERHUB_USER", "value": "alice"},
                        {
                            "name": "JUPYTERHUB_API_TOKEN",
                            "valueFrom": {
                                "secretKeyRef": {"name": "jupyter-alice--srv", "key": "JUPYTERHUB_API_TOKEN"}
                            },
                        },
                    ],  # fmt: skip
                    "resources": {},
                    "securityContext": {"allowPrivilegeEscalation": False},
                    "volumeMounts": [],
                }
            ],
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "volumes": [],
        },
    }
    validate(pod)


MAXIMAL = {
    "image": "registry.example.org/notebook:2", "image_pull_policy": "Always", "image_pull_secrets": ["pull"],
    "cmd": ["start.sh", "jupyterhub-singleuser"], "args": ["--debug"], "cpu_guarantee": 0.25, "cpu_limit": 2.0,
    "mem_guarantee": "512M", "mem_limit": "2Gi", "extra_resource_limits": {"nvidia.com/gpu": "1"},
    "node_selector": {"disk": "ssd"}, "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home-alice"}}],
    "volume_mounts": [{"name": "home", "mountPath": "/home/jovyan"}], "service_account": "notebook",
    "uid": 1000, "gid": 100, "fs_gid": 100, "working_dir": "/home/jovyan", "priority_class_name": "users",
    "init_containers": [{"name": "init", "image": "busybox", "command": ["true"]}],
    "extra_pod_config": {"dns_policy": "ClusterFirst", "hostname": "notebook"},
    "extra_container_config": {"lifecycle": {"preStop": {"exec": {"command": ["sync"]}}}},
}  # fmt: skip


def test_maximal_pod_with_ssl() -> None:
    pod = manifests.make_pod(options(**MAXIMAL), TARGET, LABELS, ANNOTATIONS, {}, [], 9000, True)
    spec = pod["spec"]
    container = spec.pop("containers")[0]
    assert spec == {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": True,  # a service account was asked for
        "volumes": [
            {"name": "home", "persistentVolumeClaim": {"claimName": "home-alice"}},
            {
                "name": "jupyterhub-internal-certs",
                "secret": {
                    "secretName": "jupyter-alice--srv",
                    "items": [
                        {"key": "ssl.key", "path": "ssl.key"},
                        {"key": "ssl.crt", "path": "ssl.crt"},
                        {"key": "notebooks-ca_trust.crt", "path": "notebooks-ca_trust.crt"},
                    ],
                },
            },
        ],  # fmt: skip
        "serviceAccountName": "notebook",
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "imagePullSecrets": [{"name": "pull"}],
        "securityContext": {"fsGroup": 100},
        "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
        "priorityClassName": "users",
        "dnsPolicy": "ClusterFirst",
        "hostname": "notebook",
    }
    assert container == {
        "name": "notebook",
        "image": "registry.example.org/notebook:2",
        "imagePullPolicy": "Always",
        "args": ["start.sh", "jupyterhub-singleuser", "--debug"],
        "ports": [{"name": "notebook-port", "containerPort": 9000, "protocol": "TCP"}],
        "env": [],
        "resources": {
            "requests": {"cpu": "250m", "memory": "536870912"},
            "limits": {"nvidia.com/gpu": "1", "cpu": "2000m", "memory": "2Gi"},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "runAsUser": 1000, "runAsGroup": 100},
        "volumeMounts": [
            {"name": "home", "mountPath": "/home/jovyan"},
            {"name": "jupyterhub-internal-certs", "mountPath": "/etc/jupyterhub/ssl/", "readOnly": True},
        ],
        "workingDir": "/home/jovyan",
        "lifecycle": {"preStop": {"exec": {"command": ["sync"]}}},
    }
    validate(manifests.make_pod(options(**MAXIMAL), TARGET, LABELS, ANNOTATIONS, {}, [], 9000, True))


def test_service_and_secret() -> None:
    selector = manifests.selector(SID, "alice")
    service = manifests.make_service(TARGET, LABELS, ANNOTATIONS, selector, 8888, "0b7e-uid")
    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "jupyter-alice--srv",
            "namespace": "ns",
            "labels": LABELS,
            "annotations": ANNOTATIONS,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": "jupyter-alice--srv",
                    "uid": "0b7e-uid",
                    "blockOwnerDeletion": True,
                }
            ],
        },  # fmt: skip
        "spec": {
            "type": "ClusterIP",
            "selector": {key: LABELS[key] for key in LABELS if key != "outpost.jupyter.org/start-id"},
            "ports": [{"name": "notebook", "port": 8888, "targetPort": "notebook-port", "protocol": "TCP"}],
        },
    }
    unowned = manifests.make_service(TARGET, LABELS, ANNOTATIONS, selector, 8888, None)
    assert "ownerReferences" not in unowned["metadata"]
    files = {"JUPYTERHUB_API_TOKEN": "t0ken", **manifests.ssl_files({"keyfile": "K", "certfile": "C"}, {"hub-ca": "H"})}
    secret = manifests.make_secret(TARGET, LABELS, ANNOTATIONS, files)
    decoded = {key: base64.b64decode(value).decode() for key, value in secret.pop("data").items()}
    assert decoded == {"JUPYTERHUB_API_TOKEN": "t0ken", "ssl.key": "K", "ssl.crt": "C", "notebooks-ca_trust.crt": "\nH"}
    assert secret == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": "jupyter-alice--srv", "namespace": "ns", "labels": LABELS,
                                   "annotations": ANNOTATIONS}}  # fmt: skip
    for obj in (service, manifests.make_secret(TARGET, LABELS, ANNOTATIONS, files)):
        validate(obj)


def test_identity_secret_is_owned_by_the_pod_and_carries_only_its_identity() -> None:
    extra = {"team": "a"}
    pod = manifests.make_pod(options(), TARGET, {**LABELS, **extra}, {**ANNOTATIONS, **extra}, {}, [], 8888, False)
    pod["metadata"]["uid"] = "0b7e-uid"
    secret = manifests.make_identity_secret(pod, "gAAAA-sealed")
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "jupyter-alice--srv-identity",
            "namespace": "ns",
            "labels": LABELS,
            "annotations": ANNOTATIONS,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "jupyter-alice--srv", "uid": "0b7e-uid"}],
        },
        "type": "Opaque",
        "data": {"identity.sealed": base64.b64encode(b"gAAAA-sealed").decode()},
    }
    validate(secret)
    longest = copy.deepcopy(pod)
    longest["metadata"]["name"] = "x" * 63
    validate(manifests.make_identity_secret(longest, "sealed"))

    assert manifests.sealed_identity(secret, "jupyter-alice--srv", "0b7e-uid") == "gAAAA-sealed"
    assert manifests.sealed_identity(secret, "jupyter-alice--srv", None) == "gAAAA-sealed"
    assert manifests.sealed_identity(secret, "jupyter-alice--srv", "an-earlier-pod") is None
    assert manifests.sealed_identity(secret, "jupyter-bob", None) is None  # another pod's
    unmanaged = copy.deepcopy(secret)
    unmanaged["metadata"]["labels"] = {}
    assert not manifests.keeps_identity_of(unmanaged, "jupyter-alice--srv")
    assert manifests.sealed_identity(unmanaged, "jupyter-alice--srv", None) is None
    for data in ({}, {"identity.sealed": "not base64!"}, {"identity.sealed": base64.b64encode(b"\xff").decode()}):
        assert manifests.sealed_identity({**secret, "data": data}, "jupyter-alice--srv", None) is None


def test_the_schema_check_rejects_what_the_api_server_would() -> None:
    """The teardown check of every object sent is worth something: it does fail."""
    pod = manifests.make_pod(options(), TARGET, LABELS, ANNOTATIONS, {}, [], 8888, False)
    broken = copy.deepcopy(pod)
    broken["spec"]["containers"][0]["ports"][0]["containerPort"] = "8888"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    unknown = copy.deepcopy(pod)
    unknown["spec"]["restart_policy"] = "Never"  # strict: unknown fields are errors
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(unknown)


def test_environment_keeps_secrets_out_of_the_pod_spec() -> None:
    hub_env = {
        "JUPYTERHUB_API_TOKEN": "a",
        "JUPYTERHUB_FLAVORS_UPDATE_TOKEN": "b",
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:1/user/alice/",
    }
    plain, secret = manifests.environment(hub_env, options(environment={"MY_PASSWORD": "c", "EDITOR": "vim"},
                                                           mem_limit="1G"), "https", 8888)  # fmt: skip
    assert secret == {"JUPYTERHUB_API_TOKEN": "a", "JUPYTERHUB_FLAVORS_UPDATE_TOKEN": "b", "MY_PASSWORD": "c"}
    assert plain == {
        "JUPYTERHUB_USER": "alice", "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/", "EDITOR": "vim",
        "JUPYTERHUB_SERVICE_URL": "https://0.0.0.0:8888/user/alice/",  # ours, not the hub's guess
        "MEM_LIMIT": "1073741824",
        "JUPYTERHUB_SSL_KEYFILE": "/etc/jupyterhub/ssl/ssl.key",
        "JUPYTERHUB_SSL_CERTFILE": "/etc/jupyterhub/ssl/ssl.crt",
        "JUPYTERHUB_SSL_CLIENT_CA": "/etc/jupyterhub/ssl/notebooks-ca_trust.crt",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("value", "quantity"),
    [(1024, "1024"), ("1K", "1024"), ("512M", "536870912"), ("1.5G", "1610612736"), ("2T", str(2 * 1024**4)),
     ("1Gi", "1Gi"), ("500Mi", "500Mi"), ("1e9", "1e9"), ("128974848", "128974848")],
)  # fmt: skip
def test_memory_sizes_read_as_jupyterhub_reads_them(value: int | str, quantity: str) -> None:
    assert manifests.memory_quantity(value) == quantity


@pytest.mark.parametrize("value", ["lots", "1 GB", "-1G", "1g"])
def test_memory_sizes_that_are_not(value: str) -> None:
    with pytest.raises(ValueError, match="not a memory size"):
        manifests.memory_quantity(value)


def test_labels_are_slugs_and_annotations_exact() -> None:
    sid = ServiceId("Hub One", "My Server!", "start 1")
    labels = manifests.labels_for(sid, "Ünïcode User@example.org", {"team": "data science", "hub.jupyter.org/x": "y"})
    assert labels == {
        "team": "data-science---aa90a6f2",
        "hub.jupyter.org/x": "y",
        "app.kubernetes.io/managed-by": "jupyterhub-outpost",
        "app.kubernetes.io/component": "singleuser-server",
        "outpost.jupyter.org/hub": "hub-one---9b413cc4",
        "hub.jupyter.org/username": "n-code-user-example-org---f2d1cea6",
        "hub.jupyter.org/servername": "my-server---35749f40",
        "outpost.jupyter.org/start-id": "start-1---6753dd25",
    }
    annotations = manifests.annotations_for(sid, "Ünïcode User@example.org", {})
    assert manifests.service_of({"labels": labels, "annotations": annotations}) == sid
    assert annotations["hub.jupyter.org/username"] == "Ünïcode User@example.org"
    # Identity labels cannot be overridden by extra_labels.
    forged = manifests.labels_for(sid, "alice", {"app.kubernetes.io/managed-by": "me", "outpost.jupyter.org/hub": "x"})
    assert forged["app.kubernetes.io/managed-by"] == "jupyterhub-outpost"
    assert forged["outpost.jupyter.org/hub"] == manifests.names.label_value("Hub One")


def test_service_of_ignores_what_is_not_ours() -> None:
    assert manifests.service_of({"labels": LABELS, "annotations": ANNOTATIONS}) == SID
    assert manifests.service_of({"labels": {}, "annotations": ANNOTATIONS}) is None
    assert manifests.service_of({"labels": LABELS, "annotations": {"outpost.jupyter.org/hub": "hubA"}}) is None
    assert manifests.service_of({}) is None

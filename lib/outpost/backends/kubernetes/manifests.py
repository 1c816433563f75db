"""What the kubernetes backend asks the cluster for: its options (named like KubeSpawner's) and pure
builders of the pod, Service and Secret of one server, as plain API dicts (checked by kubernetes-validate).

Labels select (slugs, at most 63 characters); annotations carry the exact hub, server name, start_id
and user, which is how a pod is traced back to its service. A running server's sealed identity (what its
lost record is rebuilt from) is kept in a Secret of its own, owned by the pod.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode, Union
from traitlets.config import Configurable

from outpost import names
from outpost.backends import common
from outpost.errors import HostNotAllowed, shown
from outpost.models import ServiceId

CONTAINER = "notebook"
PORT_NAME = "notebook-port"
MANAGED_BY = "jupyterhub-outpost"
COMPONENT = "singleuser-server"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_USER = "hub.jupyter.org/username"
LABEL_SERVER = "hub.jupyter.org/servername"
LABEL_HUB = "outpost.jupyter.org/hub"
LABEL_START_ID = "outpost.jupyter.org/start-id"
ANNOTATION_USER = "hub.jupyter.org/username"
ANNOTATION_HUB = "outpost.jupyter.org/hub"
ANNOTATION_NAME = "outpost.jupyter.org/name"
ANNOTATION_START_ID = "outpost.jupyter.org/start-id"
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}={COMPONENT}"
CERTS_VOLUME = "jupyterhub-internal-certs"
IDENTITY_KEY = "identity.sealed"
_IDENTITY_LABELS = (LABEL_MANAGED_BY, LABEL_COMPONENT, LABEL_HUB, LABEL_USER, LABEL_SERVER, LABEL_START_ID)
_IDENTITY_ANNOTATIONS = (ANNOTATION_HUB, ANNOTATION_NAME, ANNOTATION_START_ID, ANNOTATION_USER)
# Files jupyterhub-singleuser reads with internal_ssl, where KubeSpawner puts them.
SSL_FILES = {"keyfile": "ssl.key", "certfile": "ssl.crt", "cafile": "notebooks-ca_trust.crt"}
# Environment values that go into the Secret instead of the pod spec (anyone who may read pods sees that).
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|CRYPT_KEY")
_JUPYTERHUB_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT])")
_QUANTITY = re.compile(r"\d+(\.\d+)?([EPTGMk]i?|Ki|[eE]\d+|m)?")


class KubernetesBackend(Configurable):
    """Options of the kubernetes backend (`c.KubernetesBackend.*`); `misc` may override any of them."""

    namespace = Unicode("", help="Namespace of the pods; default: OUTPOST_NAMESPACE, else the kubeconfig's").tag(
        config=True
    )
    image = Unicode("quay.io/jupyterhub/singleuser:latest", help="Image of the notebook container").tag(config=True)
    image_pull_policy = Enum(
        ["Always", "IfNotPresent", "Never"], None, allow_none=True, help="The container's imagePullPolicy"
    ).tag(config=True)
    image_pull_secrets = List(Unicode(), help="Names of Secrets to pull the image with").tag(config=True)
    cmd = List(Unicode(), default_value=["jupyterhub-singleuser"], help="Server command (container args)").tag(
        config=True
    )
    args = List(Unicode(), help="Extra arguments appended to cmd").tag(config=True)
    ip = Unicode("0.0.0.0", help="Address the server binds to inside the pod").tag(config=True)
    port = Int(8888, min=0, max=65535, help="Port the server listens on; 0 means 8888").tag(config=True)
    environment = Dict(value_trait=Unicode(), help="Extra environment variables of the server").tag(config=True)
    cpu_guarantee = Float(None, allow_none=True, help="CPU cores requested").tag(config=True)
    cpu_limit = Float(None, allow_none=True, help="CPU cores at most").tag(config=True)
    mem_guarantee = Union(
        [Int(), Unicode()], default_value=None, allow_none=True, help="Memory requested: bytes, '1G', '1Gi'"
    ).tag(config=True)
    mem_limit = Union(
        [Int(), Unicode()], default_value=None, allow_none=True, help="Memory at most: bytes, '1G', '1Gi'"
    ).tag(config=True)
    extra_resource_guarantees = Dict(help="Other resource requests, e.g. {'nvidia.com/gpu': '1'}").tag(config=True)
    extra_resource_limits = Dict(help="Other resource limits, e.g. {'nvidia.com/gpu': '1'}").tag(config=True)
    node_selector = Dict(value_trait=Unicode(), help="The pod's nodeSelector").tag(config=True)
    tolerations = List(Dict(), help="The pod's tolerations (API dicts)").tag(config=True)
    volumes = List(Dict(), help="Volumes of the pod (API dicts)").tag(config=True)
    volume_mounts = List(Dict(), help="Volume mounts of the notebook container (API dicts)").tag(config=True)
    service_account = Unicode(None, allow_none=True, help="The pod's service account").tag(config=True)
    automount_service_account_token = Bool(
        None, allow_none=True, help="Mount the service account token; default: only with a service_account"
    ).tag(config=True)
    uid = Int(None, allow_none=True, help="runAsUser of the notebook container").tag(config=True)
    gid = Int(None, allow_none=True, help="runAsGroup of the notebook container").tag(config=True)
    fs_gid = Int(None, allow_none=True, help="fsGroup of the pod").tag(config=True)
    allow_privilege_escalation = Bool(False, allow_none=True, help="allowPrivilegeEscalation").tag(config=True)
    working_dir = Unicode("", help="workingDir of the notebook container").tag(config=True)
    priority_class_name = Unicode("", help="The pod's priorityClassName").tag(config=True)
    init_containers = List(Dict(), help="Init containers (API dicts)").tag(config=True)
    extra_labels = Dict(help="Labels added to the pod, Service and Secret").tag(config=True)
    extra_annotations = Dict(help="Annotations added to the pod, Service and Secret").tag(config=True)
    extra_pod_config = Dict(help="Keys merged into the pod spec (API names, e.g. restartPolicy)").tag(config=True)
    extra_container_config = Dict(help="Keys merged into the notebook container (API names)").tag(config=True)
    pod_name_template = Unicode(
        "jupyter-{user_server}", help="Name of the pod and its Service; fields as in KubeSpawner, plus {hub}"
    ).tag(config=True)
    dns_name_template = Unicode(
        "{name}.{namespace}.svc.{cluster_domain}", help="Host name of the server: {name} is the Service's"
    ).tag(config=True)
    cluster_domain = Unicode("cluster.local", help="The cluster's DNS domain").tag(config=True)
    secret_name_template = Unicode("{pod_name}", help="Name of the Secret with tokens and certificates").tag(
        config=True
    )
    secret_mount_path = Unicode("/etc/jupyterhub/ssl/", help="Where internal_ssl certificates are mounted").tag(
        config=True
    )
    internal_ssl = Bool(False, help="The hub uses internal_ssl (it sends certificates with each start)").tag(
        config=True
    )
    start_timeout = Float(
        120.0, help="Seconds for the pod to become ready; keep within OUTPOST_START_TIMEOUT_SECONDS (the reconciler's)"
    ).tag(config=True)
    start_poll_interval = Float(1.0, help="Seconds between status reads while starting").tag(config=True)
    delete_grace_period = Int(1, help="gracePeriodSeconds when deleting the pod").tag(config=True)


@dataclass(frozen=True)
class ServerNames:
    namespace: str
    pod: str  # also the Service's name
    secret: str
    host: str  # what the hub connects to

    @property
    def service(self) -> str:
        return self.pod


def server_names(
    options: KubernetesBackend, sid: ServiceId, user: str, user_id: str, namespace: str, *, home_namespace: str
) -> ServerNames:
    """The objects' names and the host published for the server. `dns_name_template` may shape the host, but
    it must name the Service created for this pod: anything else would let a hub publish (and have the SSH
    daemon forward to) any name in the cluster. `home_namespace` is where short names resolve."""
    fields = names.template_fields(user, user_id, sid.name)
    fields.update(hub=names.safe_slug(sid.hub, 48), namespace=namespace, cluster_domain=options.cluster_domain)
    pod = names.object_name(names.expand(options.pod_name_template, fields))
    secret = names.object_name(names.expand(options.secret_name_template, {**fields, "pod_name": pod}))
    host = names.expand(options.dns_name_template, {**fields, "name": pod})
    if not names.is_service_host(host, pod, namespace, options.cluster_domain, short=namespace == home_namespace):
        raise HostNotAllowed(
            f"dns_name_template gives {shown([host])}, not a name of the server's Service {pod} in namespace "
            f"{namespace}: use {{name}}.{{namespace}}.svc.{{cluster_domain}} or a shorter form of it"
        )
    return ServerNames(namespace, pod, secret, host)


def labels_for(sid: ServiceId, user: str, extra: dict[str, Any]) -> dict[str, str]:
    """Extra labels first: the identity labels always win."""
    result = {str(key): names.label_value(str(value)) for key, value in extra.items()}
    bad = [key for key in result if not names.is_qualified_key(key)]
    if bad:
        raise ValueError(f"invalid label keys: {', '.join(sorted(bad))}")
    result.update(selector(sid, user))
    result[LABEL_START_ID] = names.label_value(sid.start_id)
    return result


def selector(sid: ServiceId, user: str) -> dict[str, str]:
    """Selects the pod of one server (any start): the Service's selector."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: COMPONENT,
        LABEL_HUB: names.label_value(sid.hub),
        LABEL_USER: names.label_value(user),
        LABEL_SERVER: names.label_value(sid.name),
    }


def annotations_for(sid: ServiceId, user: str, extra: dict[str, Any]) -> dict[str, str]:
    result = {str(key): str(value) for key, value in extra.items()}
    bad = [key for key in result if not names.is_qualified_key(key)]
    if bad:
        raise ValueError(f"invalid annotation keys: {', '.join(sorted(bad))}")
    result.update(
        {ANNOTATION_HUB: sid.hub, ANNOTATION_NAME: sid.name, ANNOTATION_START_ID: sid.start_id, ANNOTATION_USER: user}
    )
    return result


def service_of(metadata: dict[str, Any]) -> ServiceId | None:
    """The service a pod (or its Service or Secret) belongs to, from our annotations."""
    if metadata.get("labels", {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
        return None
    found = metadata.get("annotations") or {}
    hub, name, start_id = (found.get(key) for key in (ANNOTATION_HUB, ANNOTATION_NAME, ANNOTATION_START_ID))
    if not (isinstance(hub, str) and isinstance(name, str) and isinstance(start_id, str)):
        return None
    return ServiceId(hub, name, start_id)


def memory_quantity(value: int | str) -> str:
    """JupyterHub's byte specifications ('512M', '1.5G': powers of 1024, as KubeSpawner reads them)
    become bytes; other Kubernetes quantities ('1Gi', '1e9') pass through."""
    if isinstance(value, int):
        return str(value)
    text = value.strip()
    jupyterhub = _JUPYTERHUB_BYTES.fullmatch(text)
    if jupyterhub:
        number, unit = jupyterhub.groups()
        return str(int(float(number) * 1024 ** ("KMGT".index(unit) + 1)))
    if _QUANTITY.fullmatch(text):
        return text
    raise ValueError(f"not a memory size: {value!r}")


def cpu_quantity(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def resources(options: KubernetesBackend) -> dict[str, dict[str, str]]:
    requests: dict[str, str] = {str(k): str(v) for k, v in options.extra_resource_guarantees.items()}
    limits: dict[str, str] = {str(k): str(v) for k, v in options.extra_resource_limits.items()}
    if options.cpu_guarantee is not None:
        requests["cpu"] = cpu_quantity(options.cpu_guarantee)
    if options.cpu_limit is not None:
        limits["cpu"] = cpu_quantity(options.cpu_limit)
    if options.mem_guarantee is not None:
        requests["memory"] = memory_quantity(options.mem_guarantee)
    if options.mem_limit is not None:
        limits["memory"] = memory_quantity(options.mem_limit)
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def environment(
    hub_env: dict[str, str], options: KubernetesBackend, scheme: str, port: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret) variables of the server: the hub's env, the options' and what we decide."""
    env = {**hub_env, **options.environment}
    env["JUPYTERHUB_SERVICE_URL"] = common.service_url(scheme, options.ip, port, hub_env)
    env.update(common.resource_env({key: getattr(options, key) for key in common.RESOURCE_KEYS}, _quantity))
    if scheme == "https":
        mount = options.secret_mount_path.rstrip("/") + "/"
        env.update(common.ssl_env({name: mount + file for name, file in SSL_FILES.items()}))
    secret = {key: value for key, value in env.items() if _SECRET_ENV.search(key)}
    plain = {key: value for key, value in env.items() if key not in secret}
    return plain, secret


def _quantity(key: str, value: object) -> str:
    """A limit as the server is told it: memory in bytes (as KubeSpawner's), cores as a plain number."""
    if key.startswith("mem_"):
        return memory_quantity(value if isinstance(value, int) else str(value))
    return f"{value:g}"


def ssl_files(certs: dict[str, str], trust_bundles: dict[str, str]) -> dict[str, str]:
    """The three files jupyterhub-singleuser needs; the client CA bundle also trusts the hub's CA."""
    client_ca = certs.get("cafile", "").strip("\n") + "\n" + trust_bundles.get("hub-ca", "")
    return {
        SSL_FILES["keyfile"]: certs["keyfile"],
        SSL_FILES["certfile"]: certs["certfile"],
        SSL_FILES["cafile"]: client_ca,
    }


def _metadata(name: str, target: ServerNames, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": target.namespace, "labels": dict(labels), "annotations": dict(annotations)}


def make_secret(
    target: ServerNames, labels: dict[str, str], annotations: dict[str, str], files: dict[str, str]
) -> dict[str, Any]:
    """Secret environment values (keyed by variable name) and certificate files (keyed by file name)."""
    data = {key: base64.b64encode(value.encode()).decode() for key, value in sorted(files.items())}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(target.secret, target, labels, annotations),
        "type": "Opaque",
        "data": data,
    }


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def make_pod(
    options: KubernetesBackend,
    target: ServerNames,
    labels: dict[str, str],
    annotations: dict[str, str],
    env: dict[str, str],
    secret_env: list[str],
    port: int,
    ssl: bool,
) -> dict[str, Any]:
    """The pod of one server. `secret_env` names variables read from the server's Secret."""
    variables: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in sorted(env.items())]
    variables += [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": target.secret, "key": key}}} for key in sorted(secret_env)
    ]
    security: dict[str, Any] = {}
    if options.allow_privilege_escalation is not None:
        security["allowPrivilegeEscalation"] = options.allow_privilege_escalation
    if options.uid is not None:
        security["runAsUser"] = options.uid
    if options.gid is not None:
        security["runAsGroup"] = options.gid
    mounts = [dict(mount) for mount in options.volume_mounts]
    volumes = [dict(volume) for volume in options.volumes]
    if ssl:
        mounts.append({"name": CERTS_VOLUME, "mountPath": options.secret_mount_path, "readOnly": True})
        items = [{"key": name, "path": name} for name in SSL_FILES.values()]
        volumes.append({"name": CERTS_VOLUME, "secret": {"secretName": target.secret, "items": items}})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": options.image,
        "args": [*options.cmd, *options.args],
        "ports": [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "env": variables,
        "resources": resources(options),
        "securityContext": security,
        "volumeMounts": mounts,
    }
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    if options.working_dir:
        container["workingDir"] = options.working_dir
    container.update({_camel(key): value for key, value in options.extra_container_config.items()})
    automount = options.automount_service_account_token
    spec: dict[str, Any] = {
        "containers": [container],
        # An exited server stays exited: poll reports its exit code, as JupyterHub expects.
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": bool(options.service_account) if automount is None else automount,
        "volumes": volumes,
    }
    optional: dict[str, Any] = {
        "serviceAccountName": options.service_account,
        "nodeSelector": dict(options.node_selector),
        "tolerations": [dict(toleration) for toleration in options.tolerations],
        "imagePullSecrets": [{"name": secret} for secret in options.image_pull_secrets],
        "securityContext": {"fsGroup": options.fs_gid} if options.fs_gid is not None else {},
        "initContainers": [dict(init) for init in options.init_containers],
        "priorityClassName": options.priority_class_name,
    }
    spec.update({key: value for key, value in optional.items() if value})
    spec.update({_camel(key): value for key, value in options.extra_pod_config.items()})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(target.pod, target, labels, annotations),
        "spec": spec,
    }


def make_service(
    target: ServerNames,
    labels: dict[str, str],
    annotations: dict[str, str],
    selector: dict[str, str],
    port: int,
    owner_uid: str | None,
) -> dict[str, Any]:
    """The server's stable address; owned by the pod (when its uid is known), so it goes with it."""
    metadata = _metadata(target.service, target, labels, annotations)
    if owner_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": target.pod, "uid": owner_uid, "blockOwnerDeletion": True}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "notebook", "port": port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def identity_secret_name(pod: str) -> str:
    """The Secret that keeps a pod's sealed identity (pod names have at most 63 characters, Secrets 253)."""
    return f"{pod}-identity"


def make_identity_secret(pod: dict[str, Any], sealed: str) -> dict[str, Any]:
    """The sealed identity of a running pod's server, in a Secret owned by the pod: the cluster deletes it
    with the pod. It carries the pod's identity labels and annotations (not the administrator's extras)."""
    metadata = pod["metadata"]
    labels, annotations = metadata.get("labels", {}), metadata.get("annotations", {})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": identity_secret_name(metadata["name"]),
            "namespace": metadata["namespace"],
            "labels": {key: labels[key] for key in _IDENTITY_LABELS if key in labels},
            "annotations": {key: annotations[key] for key in _IDENTITY_ANNOTATIONS if key in annotations},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": metadata["name"], "uid": metadata["uid"]}],
        },
        "type": "Opaque",
        "data": {IDENTITY_KEY: base64.b64encode(sealed.encode()).decode()},
    }


def keeps_identity_of(secret: dict[str, Any], pod: str) -> bool:
    """Whether a Secret is the identity Secret of a pod of this name (this one or an earlier one): ours, and
    owned by that pod. Anything else of that name is someone else's, never rewritten or deleted."""
    metadata = secret.get("metadata", {})
    owners = metadata.get("ownerReferences") or []
    owned = any(owner.get("kind") == "Pod" and owner.get("name") == pod for owner in owners)
    return owned and service_of(metadata) is not None


def sealed_identity(secret: dict[str, Any], pod: str, pod_uid: str | None) -> str | None:
    """The sealed identity kept for this pod, if the Secret is its identity Secret and, when the pod's uid
    is known, owned by that very pod: a Secret left from an earlier pod of that name does not speak for it."""
    owners = secret.get("metadata", {}).get("ownerReferences") or []
    if not keeps_identity_of(secret, pod):
        return None
    if pod_uid is not None and not any(owner.get("uid") == pod_uid for owner in owners):
        return None
    value = (secret.get("data") or {}).get(IDENTITY_KEY)
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode()
    except ValueError:  # not base64, or not text (UnicodeDecodeError is a ValueError)
        return None

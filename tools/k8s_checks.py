"""Offline checks of Kubernetes manifests: core kinds, custom resources and Knative's webhook rules.

- core kinds (Deployment, Service, RBAC, ...): `kubernetes-validate`, strict (unknown fields fail);
- custom resources (Knative Serving/Eventing, Gateway API): jsonschema against the upstream CRD's
  openAPIV3Schema, made strict the way kubectl's field validation is (see `strict_schema`);
- Knative's admission webhook rules that no schema holds: `knative_service_errors`.

    python tools/k8s_checks.py knative/crds manifest.yaml...   # exit 1 and a list of errors on failure
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

__all__ = [
    "CORE_GROUPS",
    "KUBERNETES_VERSION",
    "MAX_TIMEOUT_SECONDS",
    "core_errors",
    "crd_dir",
    "cr_errors",
    "find_objects",
    "is_core",
    "knative_service_errors",
    "load_crd_schemas",
    "load_documents",
    "one_object",
    "strict_schema",
]

KUBERNETES_VERSION = "1.37.0"
# Groups whose kinds kubernetes-validate knows; everything else is a custom resource.
CORE_GROUPS = {"", "apps", "batch", "rbac.authorization.k8s.io", "policy", "networking.k8s.io", "autoscaling"}
# Knative's default max-revision-timeout-seconds; the webhook rejects larger timeoutSeconds.
MAX_TIMEOUT_SECONDS = 600
MAX_CONTAINER_CONCURRENCY = 1000
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
PORT_NAMES = {"", "http1", "h2c"}
# Ports the queue-proxy uses in every Knative pod.
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091}
INT_ANNOTATIONS = (
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    "autoscaling.knative.dev/initial-scale",
    "autoscaling.knative.dev/target",
)
REPO = Path(__file__).resolve().parent.parent


def crd_dir() -> Path:
    """The upstream CRDs of every custom resource the chart and knative/ create: `knative/crds`."""
    return REPO / "knative" / "crds"


def load_documents(text: str) -> list[dict[str, Any]]:
    """All non-empty YAML documents of a multi-document text."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def group_of(obj: dict[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/")[0] if "/" in api_version else ""


def is_core(obj: dict[str, Any]) -> bool:
    return group_of(obj) in CORE_GROUPS


def core_errors(obj: dict[str, Any]) -> list[str]:
    """kubernetes-validate in strict mode: schema errors, unknown fields, unknown kinds."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_where(obj)}: {exc.message} at {'/'.join(str(p) for p in exc.path)}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{_where(obj)}: no Kubernetes {KUBERNETES_VERSION} schema for this kind"]
    return []


def strict_schema(schema: Any) -> Any:
    """Reject unknown fields like kubectl's strict field validation does.

    Every object schema with `properties` and without `x-kubernetes-preserve-unknown-fields`
    gets `additionalProperties: false`; the root also accepts apiVersion/kind/metadata
    (several eventing CRDs do not declare them).
    """
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in node
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    root = schema.setdefault("properties", {})
    root.setdefault("apiVersion", {"type": "string"})
    root.setdefault("kind", {"type": "string"})
    root.setdefault("metadata", {"type": "object"})
    return schema


def load_crd_schemas(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for every served version of every CRD under `directory`."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.rglob("*.yaml")):
        for crd in load_documents(path.read_text()):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served") and "schema" in version:
                    key = (f"{group}/{version['name']}", kind)
                    schemas[key] = strict_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def cr_errors(obj: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Errors of a custom resource against its CRD schema; an unknown kind is an error too."""
    schema = schemas.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if schema is None:
        return [f"{_where(obj)}: no CRD schema for {obj.get('apiVersion')} {obj.get('kind')}"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{_where(obj)}: {error.message} at /{'/'.join(str(p) for p in error.absolute_path)}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def knative_service_errors(ksvc: dict[str, Any], max_timeout: int = MAX_TIMEOUT_SECONDS) -> list[str]:
    """Rules Knative's webhook enforces on a Service (or Configuration) that its CRD schema does not."""
    errors: list[str] = []
    where = _where(ksvc)
    template = ksvc.get("spec", {}).get("template", {})
    spec = template.get("spec", {})
    containers = spec.get("containers", [])
    # Several containers (sidecars) are allowed; exactly one of them, the serving one, declares a port.
    serving = [c for c in containers if c.get("ports")] if len(containers) > 1 else containers
    if len(serving) != 1:
        errors.append(f"{where}: exactly one serving container expected, found {len(serving)}")
    timeout = spec.get("timeoutSeconds")
    if timeout is not None and not 0 <= timeout <= max_timeout:
        errors.append(f"{where}: timeoutSeconds {timeout} outside 0..{max_timeout}")
    for field in ("responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        value = spec.get(field)
        if value is not None and timeout is not None and value > timeout:
            errors.append(f"{where}: {field} {value} exceeds timeoutSeconds {timeout}")
    concurrency = spec.get("containerConcurrency")
    if concurrency is not None and not 0 <= concurrency <= MAX_CONTAINER_CONCURRENCY:
        errors.append(f"{where}: containerConcurrency {concurrency} outside 0..{MAX_CONTAINER_CONCURRENCY}")
    for container in containers:
        for env in container.get("env", []):
            if env.get("name") in RESERVED_ENV:
                errors.append(f"{where}: env {env['name']} is reserved by Knative")
        ports = container.get("ports", [])
        if len(ports) > 1:
            errors.append(f"{where}: at most one container port, found {len(ports)}")
        traffic_port = ports[0].get("containerPort", 8080) if ports else 8080
        for port in ports:
            if port.get("name", "") not in PORT_NAMES:
                errors.append(f"{where}: port name {port.get('name')!r} not one of http1, h2c or empty")
            if port.get("containerPort") in RESERVED_PORTS:
                errors.append(f"{where}: port {port['containerPort']} is reserved by the queue-proxy")
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if not probe:
                continue
            handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in probe]
            if len(handlers) != 1:
                errors.append(f"{where}: {probe_name} needs exactly one handler, has {handlers}")
            for handler in ("httpGet", "tcpSocket"):
                port = probe.get(handler, {}).get("port")
                if port is not None and port != traffic_port:
                    errors.append(f"{where}: {probe_name} port must be omitted or {traffic_port}")
    annotations = ksvc.get("metadata", {}).get("annotations", {}) or {}
    for key in annotations:
        if key.startswith("autoscaling.knative.dev/"):
            errors.append(f"{where}: {key} belongs on spec.template.metadata.annotations")
    template_annotations = template.get("metadata", {}).get("annotations", {}) or {}
    scale: dict[str, int] = {}
    for key in INT_ANNOTATIONS:
        if key in template_annotations:
            value = template_annotations[key]
            if not isinstance(value, str) or not value.isdigit():
                errors.append(f"{where}: {key} must be a quoted non-negative integer, got {value!r}")
            else:
                scale[key] = int(value)
    low = scale.get("autoscaling.knative.dev/min-scale", 0)
    high = scale.get("autoscaling.knative.dev/max-scale", 0)
    if high and low > high:
        errors.append(f"{where}: min-scale {low} above max-scale {high}")
    return errors


def find_objects(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The documents of `kind` (and `name`, when given)."""
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def one_object(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single document of `kind` (and `name`); AssertionError otherwise."""
    found = find_objects(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _where(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _check(paths: Iterable[Path], schemas: dict[tuple[str, str], dict[str, Any]]) -> Iterator[str]:
    for path in paths:
        for obj in load_documents(path.read_text()):
            if is_core(obj):
                yield from core_errors(obj)
            else:
                yield from cr_errors(obj, schemas)
                if obj.get("apiVersion") == "serving.knative.dev/v1" and obj.get("kind") == "Service":
                    yield from knative_service_errors(obj)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    schemas = load_crd_schemas(Path(argv[0]))
    errors = list(_check((Path(p) for p in argv[1:]), schemas))
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

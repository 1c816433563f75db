"""What a pod (an API dict, as read or as an event carried it) says about its server: ready, failed for good,
exited with a code. Pure reading: no API calls, no Redis; the backend and the pod-status workflow share it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from outpost.backends.kubernetes.manifests import CERTS_VOLUME, CONTAINER

# Waiting reasons after which the container will not start without someone changing something.
FATAL_WAITING = frozenset(
    {
        "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CrashLoopBackOff",
        "CreateContainerError", "RunContainerError",
    }
)  # fmt: skip


@runtime_checkable
class PodReader(Protocol):
    """A backend that can read its pods (the Kubernetes backend): what the pod-status workflow needs,
    checked by shape so that using it does not import the Kubernetes client."""

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]: ...


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((status for status in statuses if status.get("name") == CONTAINER), {})


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    if pod.get("metadata", {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return bool(_container(pod).get("ready"))


def start_failure(pod: dict[str, Any]) -> str | None:
    """Why this pod will never serve, or None while it may still come up."""
    status = pod.get("status", {})
    state = _container(pod).get("state", {})
    terminated = state.get("terminated")
    if terminated or status.get("phase") in ("Failed", "Succeeded"):
        detail = terminated or {}
        reason = detail.get("reason") or status.get("reason") or status.get("phase")
        message = detail.get("message") or status.get("message") or ""
        code = detail.get("exitCode", "unknown")
        return f"the server exited with code {code} ({reason}){': ' + message if message else ''}"
    for waiting in waiting_states(status):
        if waiting.get("reason") in FATAL_WAITING:
            return f"{waiting['reason']}: {waiting.get('message') or 'the container cannot start'}"
    return None


def waiting_states(status: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = container.get("state", {}).get("waiting")
            if waiting:
                yield waiting


def pod_exit_code(pod: dict[str, Any] | None) -> int | None:
    """JupyterHub's poll answer for a pod: None while it runs (or may still), else an exit code."""
    if pod is None:
        return 1  # gone: deleted from outside, or evicted and collected
    terminated = _container(pod).get("state", {}).get("terminated")
    if terminated:
        return int(terminated.get("exitCode", 1))
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return 1  # being deleted: the server is going away
    phase = pod.get("status", {}).get("phase")
    if phase == "Succeeded":
        return 0
    if phase == "Failed":
        return 1
    return None  # Pending, Running, Unknown (a node that lost contact may come back)


def secret_of(pod: dict[str, Any]) -> str:
    """The server's Secret, as its pod refers to it (for pods found without their record)."""
    spec = pod.get("spec", {})
    for volume in spec.get("volumes") or []:
        if volume.get("name") == CERTS_VOLUME:
            return str(volume["secret"]["secretName"])
    for container in spec.get("containers") or []:
        for variable in container.get("env") or [] if container.get("name") == CONTAINER else []:
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                return str(ref["name"])
    return ""

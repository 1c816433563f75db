"""A Kubernetes API for tests and benchmarks: kmock's emulator with what a real API server adds, a
kubelet played by the test, and the schema check (kubernetes-validate, strict) of sent objects."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import kmock
import kubernetes_validate

NAMESPACE = "outpost-test"
# The oldest Kubernetes release we support and the newest schema kubernetes-validate ships.
SCHEMA_VERSIONS = ("1.33", kubernetes_validate.latest_version())
KUBELET_AGENT = "test-kubelet"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate(obj: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError for anything the API server would reject."""
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus what a real API server adds on create (namespace, uid, creationTimestamp,
    resourceVersion, a Pending pod status). Keeps a copy of every object a client sent."""

    sent: list[dict[str, Any]] = attrs.field(factory=list)
    logs: dict[str, str] = attrs.field(factory=dict)
    pod_reads: int = 0  # GETs of single pods, however many requests are kept
    # kmock keeps every request and matches new ones against all it kept: a long benchmark forgets them.
    keep_requests: bool = True
    read_delay: float = 0.0  # seconds added to each GET of one object (a real API server's round trip)
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    async def _handle(self, request: kmock.Request) -> Any:
        if request.params.get("watch") == "True" and request.action != kmock.action.WATCH:
            # kubernetes_asyncio sends watch=True; the API server (Go's ParseBool) takes it, kmock not yet.
            watching = attrs.evolve(request, action=kmock.action.WATCH)
            self._requests[[id(r) for r in self._requests].index(id(request))] = watching  # kmock matches by identity
            request = watching
        agent = request.headers.get("User-Agent", "")
        writes = request.action in (kmock.action.CREATE, kmock.action.UPDATE)
        if writes and isinstance(request.data, dict) and agent != KUBELET_AGENT and request.resource is not None:
            sent = copy.deepcopy(request.data)
            if request.subresource is None and request.action == kmock.action.CREATE:
                # The API server takes the kind from the URL when a client leaves it out (KubeSpawner does).
                info = self.resources[request.resource]
                sent.setdefault("apiVersion", "v1")
                sent.setdefault("kind", info.kind)
            self.sent.append(sent)
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            metadata.setdefault("namespace", request.namespace)
            metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=str(next(self._versions)))
            if request.resource is not None and request.resource.plural == "pods":
                request.data["status"] = {"phase": "Pending"}
        if request.action == kmock.action.FETCH and request.resource is not None and request.subresource is None:
            self.pod_reads += request.resource.plural == "pods"
            await asyncio.sleep(self.read_delay)
        try:
            return await super()._handle(request)
        finally:
            if not self.keep_requests:
                self._requests[:] = [kept for kept in self._requests if kept is not request]

    def live(self, plural: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(namespace, name) -> object, for the objects of a kind that exist now."""
        return {
            (namespace, name): obj.raw
            for (resource, namespace, name), obj in self.objects.items()
            if resource.plural == plural and not obj.deleted
        }

    @property
    def requests(self) -> list[kmock.Request]:
        """Every request served so far (kmock keeps them privately for now)."""
        return list(self._requests)

    def requests_to(self, action: kmock.action, plural: str) -> list[kmock.Request]:
        return [r for r in self.requests if r.action == action and r.resource and r.resource.plural == plural]


def running_status(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "phase": "Running",
        "podIP": "10.1.2.3",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "notebook", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"running": {"startedAt": now()}}}
        ],
    }  # fmt: skip


def waiting_status(reason: str, message: str) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "containerStatuses": [
            {"name": "notebook", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"waiting": {"reason": reason, "message": message}}}
        ],
    }  # fmt: skip


def exited_status(code: int, reason: str = "Error") -> dict[str, Any]:
    return {
        "phase": "Succeeded" if code == 0 else "Failed",
        "containerStatuses": [
            {"name": "notebook", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"terminated": {"exitCode": code, "reason": reason}}}
        ],
    }  # fmt: skip


@attrs.define
class Kubelet:
    """Plays the node: each new pod gets the behaviour its test planned (default: it becomes ready),
    written through the API like a kubelet does, so watchers see it too."""

    server: ApiServer
    plans: dict[str, str] = attrs.field(factory=dict)  # pod name -> "ready" | "image" | "crash" | "pending"
    default: str = "ready"
    handled: set[str] = attrs.field(factory=set)

    async def _request(self, method: str, path: str, body: dict[str, Any]) -> None:
        response = await self.server.request(method, path, json=body, headers={"User-Agent": KUBELET_AGENT})
        response.raise_for_status()
        response.release()

    async def set_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status})

    async def event(self, pod: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
        metadata = pod["metadata"]
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}", "namespace": metadata["namespace"]},
            "involvedObject": {"kind": "Pod", "name": metadata["name"], "namespace": metadata["namespace"],
                               "uid": metadata["uid"]},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(),
        }  # fmt: skip
        await self._request("POST", f"/api/v1/namespaces/{metadata['namespace']}/events", event)

    async def _handle(self, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        plan = self.plans.get(name, self.default)
        await self.event(pod, "Scheduled", f"Successfully assigned {namespace}/{name} to node-1")
        if plan == "ready":
            await self.event(pod, "Pulled", f'Container image "{pod["spec"]["containers"][0]["image"]}" present')
            await self.set_status(namespace, name, running_status(pod))
        elif plan == "image":
            await self.event(pod, "Failed", "Failed to pull image: not found", kind="Warning")
            await self.set_status(namespace, name, waiting_status("ImagePullBackOff", 'Back-off pulling image "nope"'))
        elif plan == "crash":
            self.server.logs[name] = "starting\nTraceback: boom\n"
            await self.set_status(namespace, name, exited_status(3))

    async def run(self) -> None:
        while True:
            for pod in list(self.server.live("pods").values()):
                uid = pod["metadata"]["uid"]
                if uid not in self.handled:
                    self.handled.add(uid)
                    await self._handle(pod)
            await asyncio.sleep(0.01)

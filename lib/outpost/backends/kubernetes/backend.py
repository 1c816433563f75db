"""Servers as Kubernetes pods: a pod, a Service for its stable address, a Secret for tokens and certificates.

Uses the official synchronous `kubernetes` client in worker threads (asyncio.to_thread), in this module only:
it is the Kubernetes project's own client, generated for every release, where kubernetes_asyncio is a
community port that trails it; a start or poll makes a handful of short calls, for which a thread costs
nothing next to the API server's round trip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as kubeconfig
from traitlets.config import Config

from outpost.backends import common, output
from outpost.backends.base import Progress, SaveState, Started, StartSpec, apply_overrides
from outpost.backends.kubernetes import manifests
from outpost.backends.kubernetes.manifests import CONTAINER, KubernetesBackend, ServerNames
from outpost.backends.kubernetes.pods import pod_exit_code, pod_ready, secret_of, start_failure, waiting_states
from outpost.errors import BackendError, ConfigurationError, InvalidBody
from outpost.models import ServiceId

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a hung API call must not pin a worker thread forever
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STALE_POD_DELETE_SECONDS = 30.0


@dataclass(frozen=True)
class Connection:
    """How to reach the API server, and the namespace the kubeconfig context (or the pod) is in."""

    configuration: Any  # kubernetes.client.Configuration
    namespace: str


def connect(kubeconfig_file: str | None = None) -> Connection:
    """In a pod: its service account; elsewhere the kubeconfig (`KUBECONFIG`, else ~/.kube/config)."""
    configuration = k8s.Configuration()
    try:
        if kubeconfig_file is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubeconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return Connection(configuration, SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default")
        kubeconfig.load_kube_config(config_file=kubeconfig_file, client_configuration=configuration)  # type: ignore[no-untyped-call]
        _, active = kubeconfig.list_kube_config_contexts(config_file=kubeconfig_file)  # type: ignore[no-untyped-call]
    except (kubeconfig.ConfigException, OSError) as exc:
        raise ConfigurationError(f"cannot load the Kubernetes configuration: {exc}") from None
    return Connection(configuration, (active or {}).get("context", {}).get("namespace") or "default")


def state_of(target: ServerNames, grace: int = 1) -> dict[str, Any]:
    return {
        "namespace": target.namespace, "pod": target.pod, "service": target.service, "secret": target.secret,
        "grace": grace,
    }  # fmt: skip


class _NameTaken(BackendError):
    """An object of that name exists and belongs to another server."""


def _owner(existing: dict[str, Any], sid: ServiceId, user: str) -> str | None:
    """Whose object this is: "this start", "an earlier start" of the same server, or None (someone else's)."""
    metadata = existing.get("metadata", {})
    owner = manifests.service_of(metadata)
    if owner == sid:
        return "this start"
    same_user = metadata.get("annotations", {}).get(manifests.ANNOTATION_USER) == user
    if owner is not None and same_user and (owner.hub, owner.name) == (sid.hub, sid.name):
        return "an earlier start"
    return None


def _problem(exc: Any) -> str:
    """The API server's own explanation of a refused call (its Status message)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or f"HTTP {exc.status}")


class PodBackend:
    """The backend; its API client is built once, on first use, and shared by all calls of this runtime."""

    def __init__(self, config: Config, namespace: str = "", connection: Connection | None = None) -> None:
        self._config = config
        self._namespace = namespace
        self._connection = connection
        self._api: Any = None  # kubernetes.client.CoreV1Api
        self._api_lock = asyncio.Lock()

    # --- plumbing -------------------------------------------------------------------------------

    async def _core(self) -> Any:
        async with self._api_lock:
            if self._api is None:
                if self._connection is None:
                    self._connection = await asyncio.to_thread(connect)
                self._api = k8s.CoreV1Api(k8s.ApiClient(self._connection.configuration))
        return self._api

    async def _raw(self, method: str, *args: Any, **kwargs: Any) -> bytes:
        api = await self._core()

        def call() -> bytes:
            response = getattr(api, method)(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            return bytes(response.data)

        return await asyncio.to_thread(call)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raw = await self._raw(method, *args, **kwargs)
        return json.loads(raw) if raw else None

    async def default_namespace(self) -> str:
        if self._namespace:
            return self._namespace
        return await self.own_namespace()

    async def own_namespace(self) -> str:
        """The namespace the outpost runs in (or its kubeconfig context's): where short names resolve."""
        await self._core()
        assert self._connection is not None
        return self._connection.namespace

    async def aclose(self) -> None:
        if self._api is not None:
            await asyncio.to_thread(self._api.api_client.close)
            self._api = None

    # --- reads shared with the pod-status handler ----------------------------------------------

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod: dict[str, Any] = await self._call("read_namespaced_pod", name, namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return pod

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        """Our single-user pods in a namespace (the label selector is checked here too)."""
        listing = await self._call("list_namespaced_pod", namespace, label_selector=manifests.MANAGED_SELECTOR)
        return [pod for pod in listing.get("items", []) if manifests.service_of(pod.get("metadata", {}))]

    # --- the backend contract -----------------------------------------------------------------

    def _options(self, spec: StartSpec) -> KubernetesBackend:
        options = KubernetesBackend(config=self._config)
        try:
            apply_overrides(options, spec.misc)
            # The flavor's resources come last: a hub's misc cannot raise its own limits.
            apply_overrides(options, spec.resources)
        except Exception as exc:  # a trait rejected the value's type
            raise InvalidBody(f"invalid backend option: {exc}") from None
        return options

    async def start(self, spec: StartSpec, save_state: SaveState, progress: Progress) -> Started:
        options = self._options(spec)
        user, user_id = spec.env.get("JUPYTERHUB_USER", ""), spec.env.get("JUPYTERHUB_USER_ID", "")
        ssl = common.uses_tls(spec.certs)
        if options.internal_ssl and not ssl:
            raise BackendError("internal_ssl is on, but the start request carried no certificates")
        scheme, port = common.scheme(ssl), options.port or 8888
        try:
            namespace = options.namespace or await self.default_namespace()
            home = await self.own_namespace()
            target = manifests.server_names(options, spec.sid, user, user_id, namespace, home_namespace=home)
            labels = manifests.labels_for(spec.sid, user, options.extra_labels)
            annotations = manifests.annotations_for(spec.sid, user, options.extra_annotations)
            env, secret_env = manifests.environment(spec.env, options, scheme, port)
            files = {**secret_env, **(manifests.ssl_files(spec.certs, spec.trust_bundles) if ssl else {})}
            pod = manifests.make_pod(options, target, labels, annotations, env, list(secret_env), port, ssl)
        except ValueError as exc:
            raise InvalidBody(f"invalid backend option: {exc}") from None
        state = state_of(target, options.delete_grace_period)
        await save_state(state)
        await progress(20, f"Creating pod {target.pod} in namespace {target.namespace}")
        try:
            # The pod first: it claims the name. Its Secret follows at once (the kubelet waits for it).
            created = await self._create_pod(pod, spec.sid, user)
            if files:
                await self._claim("secret", manifests.make_secret(target, labels, annotations, files), spec.sid, user)
            selector = manifests.selector(spec.sid, user)
            uid = created.get("metadata", {}).get("uid")
            service = manifests.make_service(target, labels, annotations, selector, port, uid)
            await self._claim("service", service, spec.sid, user)
            await progress(30, f"Pod {target.pod} created, waiting for it to be ready")
            await self._wait_ready(target, options, progress, [*env.values(), *secret_env.values()])
        except _NameTaken:
            raise  # nothing was created, and what is there is not ours to remove
        except Exception as exc:
            await self._discard(state, spec.sid)
            if isinstance(exc, BackendError):
                raise
            if isinstance(exc, k8s.ApiException):
                raise BackendError(f"Kubernetes refused the server: {_problem(exc)}") from None
            raise
        log.info("pod %s/%s of %s is ready", target.namespace, target.pod, spec.sid)
        return Started(address=f"{scheme}://{target.host}:{port}", state=state)

    async def _discard(self, state: dict[str, Any], sid: ServiceId) -> None:
        try:
            await self.stop(state)
        except Exception:  # the reconciler removes what is left
            log.exception("cleaning up after the failed start of %s failed", sid)

    async def _existing(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call(f"read_namespaced_{kind}", name, namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def _claim(self, kind: str, body: dict[str, Any], sid: ServiceId, user: str) -> None:
        """Create a Service or Secret; one that exists and belongs to this server (a retried or repeated
        start) is kept (Service) or rewritten with the fresh tokens (Secret); anyone else's is refused."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            await self._call(f"create_namespaced_{kind}", namespace, body)
            return
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
        existing = await self._existing(kind, namespace, name)
        if existing is not None and _owner(existing, sid, user) is None:
            raise _NameTaken(f"{kind} {name} in namespace {namespace} belongs to another server; "
                             "make its name template unique (for example with {hub})")  # fmt: skip
        if kind == "secret":
            await self._call("patch_namespaced_secret", name, namespace, body)

    async def _create_pod(self, pod: dict[str, Any], sid: ServiceId, user: str) -> dict[str, Any]:
        """Create the pod; one that exists is ours (a retried start: reuse it), a leftover of an earlier
        start of the same server (replace it, as KubeSpawner does), or someone else's (refuse)."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        for _ in range(2):
            try:
                created: dict[str, Any] = await self._call("create_namespaced_pod", namespace, pod)
                return created
            except k8s.ApiException as exc:
                if exc.status != 409:
                    raise
            existing = await self.read_pod(namespace, name)
            if existing is None:
                continue  # deleted in between: create again
            owner = _owner(existing, sid, user)
            if owner is None:
                raise _NameTaken(f"pod {name} in namespace {namespace} belongs to another server; "
                                 "make pod_name_template unique (for example with {hub})")  # fmt: skip
            if owner == "this start":
                log.info("pod %s/%s of %s exists already: reusing it", namespace, name, sid)
                return existing
            log.info("replacing pod %s/%s left by an earlier start of %s", namespace, name, sid)
            await self._delete("delete_namespaced_pod", name, namespace)
            await self._gone(namespace, name)
        raise BackendError(f"pod {name} in namespace {namespace} keeps coming back; try again later")

    async def _gone(self, namespace: str, name: str) -> None:
        deadline = time.monotonic() + STALE_POD_DELETE_SECONDS
        while await self.read_pod(namespace, name) is not None:
            if time.monotonic() > deadline:
                raise BackendError(f"the previous pod {name} is still terminating; try again shortly")
            await asyncio.sleep(0.5)

    async def _wait_ready(
        self, target: ServerNames, options: KubernetesBackend, progress: Progress, secrets: list[str]
    ) -> None:
        """Until the pod is ready; a failure's message ends with the container's last output (`secrets`: values
        no line shown may hold)."""

        async def tail() -> list[str]:
            return output.clean_tail(await self.logs(state_of(target)), secrets)

        deadline = time.monotonic() + options.start_timeout
        seen: set[str] = set()
        percent = 30
        while True:
            pod = await self.read_pod(target.namespace, target.pod)
            if pod is None:
                raise BackendError(f"pod {target.pod} was deleted before the server was ready")
            for message in await self._new_events(pod, seen):
                percent = min(percent + 5, 90)
                await progress(percent, message)
            failure = start_failure(pod)
            if failure is not None:
                raise BackendError(output.with_tail(f"the server could not start: {failure}", await tail()))
            if pod_ready(pod):
                return
            if time.monotonic() > deadline:
                waiting = ", ".join(w.get("reason", "") for w in waiting_states(pod.get("status", {})))
                phase = pod.get("status", {}).get("phase") or "Pending"
                raise BackendError(
                    output.with_tail(
                        f"the server was not ready within {options.start_timeout:.0f} seconds "
                        f"(pod {phase}{': ' + waiting if waiting else ''})",
                        await tail(),
                    )
                )
            await asyncio.sleep(options.start_poll_interval)

    async def _new_events(self, pod: dict[str, Any], seen: set[str]) -> list[str]:
        """Kubernetes events about this pod not forwarded yet, as progress messages."""
        metadata = pod["metadata"]
        selector = f"involvedObject.kind=Pod,involvedObject.name={metadata['name']}"
        try:
            listing = await self._call("list_namespaced_event", metadata["namespace"], field_selector=selector)
        except k8s.ApiException as exc:  # no events (or not allowed to read them): no progress details
            log.debug("cannot list events of pod %s: HTTP %s", metadata["name"], exc.status)
            return []
        messages = []
        for event in listing.get("items", []):
            involved = event.get("involvedObject", {})
            if involved.get("name") != metadata["name"]:
                continue
            if involved.get("uid") and metadata.get("uid") and involved["uid"] != metadata["uid"]:
                continue  # about an earlier pod of the same name
            key = f"{event['metadata'].get('uid') or event['metadata'].get('name')}:{event.get('count', 1)}"
            if key not in seen:
                seen.add(key)
                messages.append(f"{event.get('reason', 'Event')}: {event.get('message', '')}".strip())
        return messages

    async def poll(self, state: dict[str, Any]) -> int | None:
        return pod_exit_code(await self.read_pod(state["namespace"], state["pod"]))

    async def _delete(self, method: str, name: str, namespace: str, **options: Any) -> None:
        try:
            await self._call(method, name, namespace, **options)
        except k8s.ApiException as exc:
            if exc.status != 404:  # already gone: that is what we wanted
                raise

    async def stop(self, state: dict[str, Any]) -> None:
        namespace, grace = state["namespace"], int(state.get("grace", 1))
        deletions = [self._delete("delete_namespaced_pod", state["pod"], namespace, grace_period_seconds=grace)]
        deletions.append(self._delete("delete_namespaced_service", state["service"], namespace))
        if state.get("secret"):
            deletions.append(self._delete("delete_namespaced_secret", state["secret"], namespace))
        deletions.append(self._forget_identity(namespace, state["pod"]))
        results = await asyncio.gather(*deletions, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            problem = _problem(failures[0]) if isinstance(failures[0], k8s.ApiException) else repr(failures[0])
            raise BackendError(f"cannot delete pod {state['pod']}: {problem}")
        log.info("deleted pod %s/%s", namespace, state["pod"])

    async def logs(self, state: dict[str, Any]) -> list[str]:
        try:
            raw = await self._raw(
                "read_namespaced_pod_log",
                state["pod"],
                state["namespace"],
                container=CONTAINER,
                tail_lines=common.LOG_TAIL_LINES,
            )
        except k8s.ApiException:  # no pod, or its container never started: nothing to show
            return []
        return common.log_tail(raw.decode(errors="replace"))

    # A running server's sealed identity is kept in a Secret owned by its pod (the functions may create
    # Secrets, not patch pods), so a pod whose record is lost is re-adopted rather than stopped.
    keeps_identity = True

    async def remember(self, state: dict[str, Any], sealed: str) -> None:
        namespace, name = state["namespace"], state["pod"]
        try:
            pod = await self.read_pod(namespace, name)
            if pod is None:
                return  # gone already: there is nothing to re-adopt
            body = manifests.make_identity_secret(pod, sealed)
            try:
                await self._call("create_namespaced_secret", namespace, body)
                return
            except k8s.ApiException as exc:
                if exc.status != 409:
                    raise
            # Left by an earlier pod of this name (the cluster had not collected it yet): rewrite it,
            # unless it is not ours at all.
            secret = body["metadata"]["name"]
            existing = await self._existing("secret", namespace, secret)
            if existing is not None and not manifests.keeps_identity_of(existing, name):
                log.warning("secret %s/%s is not this server's: its identity is not kept", namespace, secret)
                return
            await self._call("patch_namespaced_secret", secret, namespace, body)
        except k8s.ApiException as exc:  # the server runs all the same; lost with its record, it is stopped
            log.warning("cannot keep the identity of pod %s/%s: %s", namespace, name, _problem(exc))

    async def _forget_identity(self, namespace: str, pod: str) -> None:
        """Delete the pod's identity Secret: the cluster would collect it with the pod, but only later, and a
        stopped server's identity must not outlive the stop. A Secret of that name not ours stays."""
        name = manifests.identity_secret_name(pod)
        secret = await self._existing("secret", namespace, name)
        if secret is not None and manifests.keeps_identity_of(secret, pod):
            await self._delete("delete_namespaced_secret", name, namespace)

    async def recall(self, state: dict[str, Any]) -> str | None:
        name = manifests.identity_secret_name(state["pod"])
        try:
            secret = await self._existing("secret", state["namespace"], name)
        except k8s.ApiException as exc:  # e.g. not allowed to read Secrets: nothing to adopt from
            log.warning("cannot read secret %s/%s: %s", state["namespace"], name, _problem(exc))
            return None
        return None if secret is None else manifests.sealed_identity(secret, state["pod"], state.get("uid"))

    async def running(self) -> list[tuple[ServiceId, dict[str, Any]]]:
        namespace = await self.default_namespace()
        found = []
        for pod in await self.list_pods(namespace):
            metadata = pod["metadata"]
            sid = manifests.service_of(metadata)
            if sid is None or metadata.get("deletionTimestamp"):
                continue
            target = ServerNames(namespace, metadata["name"], secret_of(pod), "")
            # The uid tells recall which pod an identity Secret speaks for.
            found.append((sid, {**state_of(target), "uid": metadata.get("uid")}))
        return found

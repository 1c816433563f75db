"""The kubernetes backend against kmock's API emulator over HTTP; the test plays the kubelet."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import pytest

from outpost.backends.base import StartSpec
from outpost.backends.kubernetes.backend import PodBackend, connect
from outpost.errors import BackendError, HostNotAllowed, InvalidBody
from outpost.models import ServiceId
from tests.backends.kubernetes.conftest import NAMESPACE, ApiServer, Kubelet, exited_status, running_status
from tests.support.recorder import Recorder

pytestmark = pytest.mark.asyncio(loop_scope="session")
HOST = f"jupyter-alice--srv.{NAMESPACE}.svc.cluster.local"
CERTS = {"keyfile": "KEY PEM", "certfile": "CERT PEM", "cafile": "NOTEBOOKS CA PEM\n"}
TRUST = {"hub-ca": "HUB CA PEM", "proxy-api-ca": "PROXY CA PEM"}


def spec(name: str = "srv", start_id: str = "1", user: str = "alice", hub: str = "hubA", **fields: Any) -> StartSpec:
    env = {
        "JUPYTERHUB_API_TOKEN": "secret-api-token",
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_USER_ID": "7",
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/{user}/{name}/",
        "JUPYTERHUB_API_URL": "http://hub.example.org/hub/api",
    }
    return StartSpec(sid=ServiceId(hub, name, start_id), env=env, **fields)


def objects(server: ApiServer) -> dict[str, list[str]]:
    return {plural: sorted(name for _, name in server.live(plural)) for plural in ("pods", "services", "secrets")}


async def test_start_ready_poll_stop_and_stop_again(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    recorder = Recorder()
    backend = make_backend()
    started = await backend.start(spec(), recorder.save, recorder.report)

    assert started.address == f"http://{HOST}:8888"
    state = {"namespace": NAMESPACE, "pod": "jupyter-alice--srv", "service": "jupyter-alice--srv",
             "secret": "jupyter-alice--srv", "grace": 1}  # fmt: skip
    assert started.state == state and recorder.states == [state]  # saved before anything was created
    messages = [message for _, message in recorder.progress]
    assert messages[0] == f"Creating pod jupyter-alice--srv in namespace {NAMESPACE}"
    assert f"Scheduled: Successfully assigned {NAMESPACE}/jupyter-alice--srv to node-1" in messages
    assert [p for p, _ in recorder.progress] == sorted(p for p, _ in recorder.progress)
    assert objects(apiserver) == {"pods": ["jupyter-alice--srv"], "services": ["jupyter-alice--srv"],
                                  "secrets": ["jupyter-alice--srv"]}  # fmt: skip

    pod = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]
    service = apiserver.live("services")[NAMESPACE, "jupyter-alice--srv"]
    assert service["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert "value" not in env["JUPYTERHUB_API_TOKEN"]  # the token is in the Secret, not in the pod spec
    assert env["JUPYTERHUB_SERVICE_URL"]["value"] == "http://0.0.0.0:8888/user/alice/srv/"

    assert await backend.poll(started.state) is None
    assert await make_backend().poll(started.state) is None  # another process, from the stored state
    await backend.stop(started.state)
    assert objects(apiserver) == {"pods": [], "services": [], "secrets": []}
    assert await backend.poll(started.state) == 1
    await backend.stop(started.state)  # everything is gone already: still fine
    assert await backend.logs(started.state) == []


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        ("image", 'ImagePullBackOff: Back-off pulling image "nope"'),
        ("crash", "the server exited with code 3 (Error)"),
    ],
)
async def test_failing_pod_is_a_failed_start_with_its_reason(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend], plan: str, reason: str
) -> None:
    kubelet.default = plan
    with pytest.raises(BackendError) as failure:
        await make_backend().start(spec(), Recorder().save, Recorder().report)
    # The container's log tail, for the hub's user and the admin.
    tail = ". Its last output:\nstarting\nTraceback: boom" if plan == "crash" else " (no output to show)"
    assert failure.value.message == f"the server could not start: {reason}{tail}"
    assert objects(apiserver) == {"pods": [], "services": [], "secrets": []}  # cleaned up


async def test_pod_never_ready_times_out_and_is_removed(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    kubelet.default = "pending"
    with pytest.raises(BackendError, match=r"not ready within 0 seconds \(pod Pending\)"):
        await make_backend(start_timeout=0.2).start(spec(), Recorder().save, Recorder().report)
    assert objects(apiserver)["pods"] == []


async def test_retried_start_reuses_the_pod(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    backend = make_backend()
    first = await backend.start(spec(), Recorder().save, Recorder().report)
    uid = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]["metadata"]["uid"]
    again = await make_backend().start(spec(), Recorder().save, Recorder().report)  # an event delivered twice

    assert again == first
    assert len(apiserver.live("pods")) == 1
    assert apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]["metadata"]["uid"] == uid
    assert len(apiserver.requests_to(kmock.action.CREATE, "pods")) == 2  # the second one got 409
    assert len(apiserver.requests_to(kmock.action.DELETE, "pods")) == 0


async def test_pod_left_by_an_earlier_start_is_replaced(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    await make_backend().start(spec(start_id="1"), Recorder().save, Recorder().report)
    await make_backend().start(spec(start_id="2"), Recorder().save, Recorder().report)
    pod = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]
    assert pod["metadata"]["annotations"]["outpost.jupyter.org/start-id"] == "2"
    assert pod["metadata"]["labels"]["outpost.jupyter.org/start-id"] == "2"


async def test_pod_of_another_hub_is_never_taken_over(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    await make_backend().start(spec(hub="hubA"), Recorder().save, Recorder().report)
    intruder = spec(hub="hubB")
    intruder.env["JUPYTERHUB_API_TOKEN"] = "hub-b-token"
    with pytest.raises(BackendError, match="belongs to another server; make pod_name_template unique"):
        await make_backend().start(intruder, Recorder().save, Recorder().report)
    # hubA's server is untouched: same pod, same Service, its own token in its Secret.
    assert objects(apiserver) == {"pods": ["jupyter-alice--srv"], "services": ["jupyter-alice--srv"],
                                  "secrets": ["jupyter-alice--srv"]}  # fmt: skip
    pod = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]
    assert pod["metadata"]["annotations"]["outpost.jupyter.org/hub"] == "hubA"
    secret = apiserver.live("secrets")[NAMESPACE, "jupyter-alice--srv"]
    assert base64.b64decode(secret["data"]["JUPYTERHUB_API_TOKEN"]) == b"secret-api-token"
    assert len(apiserver.requests_to(kmock.action.DELETE, "pods")) == 0

    # With the hub in the template, both hubs' alice get their own pod.
    unique = make_backend(pod_name_template="{hub}-{user_server}")
    started = await unique.start(spec(hub="hubB"), Recorder().save, Recorder().report)
    # "hubB" is no valid object name (capital B): it becomes a hashed slug, never a collision.
    assert started.address == f"http://hubb---0116e534-alice--srv.{NAMESPACE}.svc.cluster.local:8888"


async def test_internal_ssl_secret_and_mounts(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    started = await make_backend().start(
        spec(misc={"internal_ssl": True}, certs=CERTS, trust_bundles=TRUST), Recorder().save, Recorder().report
    )
    assert started.address == f"https://{HOST}:8888"
    secret = apiserver.live("secrets")[NAMESPACE, "jupyter-alice--srv"]
    files = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert files == {
        "ssl.key": "KEY PEM",
        "ssl.crt": "CERT PEM",
        "notebooks-ca_trust.crt": "NOTEBOOKS CA PEM\nHUB CA PEM",  # KubeSpawner's bundle: notebooks CA + hub CA
        "JUPYTERHUB_API_TOKEN": "secret-api-token",
    }
    pod = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]
    container = pod["spec"]["containers"][0]
    assert {"name": "jupyterhub-internal-certs", "mountPath": "/etc/jupyterhub/ssl/", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {
        "name": "jupyterhub-internal-certs",
        "secret": {
            "secretName": "jupyter-alice--srv",
            "items": [{"key": k, "path": k} for k in ("ssl.key", "ssl.crt", "notebooks-ca_trust.crt")],
        },
    } in pod["spec"]["volumes"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["JUPYTERHUB_SSL_KEYFILE"] == "/etc/jupyterhub/ssl/ssl.key"
    assert env["JUPYTERHUB_SSL_CERTFILE"] == "/etc/jupyterhub/ssl/ssl.crt"
    assert env["JUPYTERHUB_SSL_CLIENT_CA"] == "/etc/jupyterhub/ssl/notebooks-ca_trust.crt"
    assert env["JUPYTERHUB_SERVICE_URL"] == "https://0.0.0.0:8888/user/alice/srv/"


async def test_internal_ssl_without_certificates_is_refused(
    apiserver: ApiServer, make_backend: Callable[..., PodBackend]
) -> None:
    with pytest.raises(BackendError, match="internal_ssl is on, but the start request carried no certificates"):
        await make_backend().start(spec(misc={"internal_ssl": True}), Recorder().save, Recorder().report)
    assert apiserver.requests_to(kmock.action.CREATE, "pods") == []


async def test_repeated_start_rewrites_the_secret(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    await make_backend().start(spec(), Recorder().save, Recorder().report)
    renewed = spec()
    renewed.env["JUPYTERHUB_API_TOKEN"] = "fresh-token"
    await make_backend().start(renewed, Recorder().save, Recorder().report)
    secret = apiserver.live("secrets")[NAMESPACE, "jupyter-alice--srv"]
    assert base64.b64decode(secret["data"]["JUPYTERHUB_API_TOKEN"]) == b"fresh-token"


async def test_flavor_resources_win_over_misc(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    start = spec(misc={"mem_limit": "8G", "cpu_limit": 8, "image": "custom:1"},
                 resources={"mem_limit": "1G", "cpu_limit": 2, "cpu_guarantee": 0.5})  # fmt: skip
    await make_backend().start(start, Recorder().save, Recorder().report)
    container = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]["spec"]["containers"][0]
    assert container["image"] == "custom:1"
    assert container["resources"] == {"requests": {"cpu": "500m"}, "limits": {"cpu": "2000m", "memory": "1073741824"}}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["MEM_LIMIT"], env["CPU_LIMIT"], env["CPU_GUARANTEE"]) == ("1073741824", "2", "0.5")


@pytest.mark.parametrize(
    ("misc", "problem"),
    [
        ({"port": "not a port"}, "invalid backend option"),
        ({"mem_limit": "lots"}, "not a memory size: 'lots'"),
        ({"extra_labels": {"bad key!": "x"}}, "invalid label keys: bad key!"),
        ({"pod_name_template": "{nonsense}"}, "cannot expand '{nonsense}'"),
    ],
)
async def test_bad_options_are_refused_before_anything_is_created(
    apiserver: ApiServer, make_backend: Callable[..., PodBackend], misc: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidBody, match=problem.replace("(", r"\(").replace("{", r"\{")):
        await make_backend().start(spec(misc=misc), Recorder().save, Recorder().report)
    assert [r for r in apiserver.requests if r.action == kmock.action.CREATE] == []


async def test_poll_follows_the_pod(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    backend = make_backend()
    started = await backend.start(spec(), Recorder().save, Recorder().report)
    pod = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]
    await kubelet.set_status(NAMESPACE, "jupyter-alice--srv", exited_status(0, "Completed"))
    assert await backend.poll(started.state) == 0
    await kubelet.set_status(NAMESPACE, "jupyter-alice--srv", exited_status(137, "OOMKilled"))
    assert await backend.poll(started.state) == 137
    await kubelet.set_status(NAMESPACE, "jupyter-alice--srv", running_status(pod))
    assert await backend.poll(started.state) is None


async def test_logs_are_the_container_log_tail(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    backend = make_backend()
    started = await backend.start(spec(), Recorder().save, Recorder().report)
    apiserver.logs["jupyter-alice--srv"] = "".join(f"line {i}\n" for i in range(300))
    lines = await backend.logs(started.state)
    assert len(lines) == 200 and lines[-1] == "line 299"
    log_requests = [r for r in apiserver.requests if r.subresource == "log"]
    assert log_requests[-1].params == {"container": "notebook", "tailLines": "200"}


async def test_running_lists_managed_pods_for_the_reconciler(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    backend = make_backend()
    started = await backend.start(spec(), Recorder().save, Recorder().report)
    await kubelet.event(apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"], "Noise", "not a pod")
    apiserver.objects["v1/pods", NAMESPACE, "someone-else"] = {"metadata": {"name": "someone-else", "labels": {}}}
    uid = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]["metadata"]["uid"]
    assert await backend.running() == [(ServiceId("hubA", "srv", "1"), {**started.state, "uid": uid})]


async def test_the_identity_is_kept_in_a_secret_the_pod_owns_and_goes_with_the_stop(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    backend = make_backend()
    started = await backend.start(spec(), Recorder().save, Recorder().report)
    assert backend.keeps_identity
    assert await backend.recall(started.state) is None  # nothing kept yet
    await backend.remember(started.state, "sealed-1")
    pod = apiserver.live("pods")[NAMESPACE, "jupyter-alice--srv"]
    secret = apiserver.live("secrets")[NAMESPACE, "jupyter-alice--srv-identity"]
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "jupyter-alice--srv", "uid": pod["metadata"]["uid"]}
    ]
    assert secret["metadata"]["annotations"]["outpost.jupyter.org/start-id"] == "1"
    assert base64.b64decode(secret["data"]["identity.sealed"]) == b"sealed-1"
    [(sid, state)] = await backend.running()
    assert sid == ServiceId("hubA", "srv", "1")
    assert await backend.recall(state) == "sealed-1" and await backend.recall(started.state) == "sealed-1"

    await backend.remember(started.state, "sealed-2")  # a repeated start's: the Secret is rewritten
    assert await backend.recall(state) == "sealed-2"
    # A Secret another pod of that name owned does not speak for this one.
    assert await backend.recall({**state, "uid": "an-earlier-pod"}) is None

    await backend.stop(started.state)
    assert objects(apiserver) == {"pods": [], "services": [], "secrets": []}
    assert await backend.recall(state) is None


async def test_no_identity_is_kept_for_a_gone_pod_nor_over_someone_elses_secret(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    backend = make_backend()
    started = await backend.start(spec(), Recorder().save, Recorder().report)
    theirs = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"x": "eA=="},
              "metadata": {"name": "jupyter-alice--srv-identity", "namespace": NAMESPACE}}  # fmt: skip
    response = await apiserver.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json=theirs)
    assert response.status == 200
    await backend.remember(started.state, "sealed")
    assert apiserver.live("secrets")[NAMESPACE, "jupyter-alice--srv-identity"]["data"] == {"x": "eA=="}
    assert await backend.recall(started.state) is None

    await backend.stop(started.state)
    assert objects(apiserver)["secrets"] == ["jupyter-alice--srv-identity"]  # not ours to delete either
    await apiserver.delete(f"/api/v1/namespaces/{NAMESPACE}/secrets/jupyter-alice--srv-identity")
    await backend.remember(started.state, "sealed")  # the pod is gone: nothing to keep
    assert objects(apiserver)["secrets"] == []


async def test_connects_with_the_kubeconfig_and_its_namespace(
    apiserver: ApiServer, kubelet: Kubelet, kubeconfig: Path
) -> None:
    from traitlets.config import Config

    connection = connect(str(kubeconfig))
    assert connection.namespace == NAMESPACE
    assert connection.configuration.host == str(apiserver.url).rstrip("/")
    assert list(connection.configuration.api_key.values()) == ["Bearer not-checked"]
    backend = PodBackend(Config(), connection=connection)
    try:
        started = await backend.start(spec(), Recorder().save, Recorder().report)
        assert started.state["namespace"] == NAMESPACE
    finally:
        await backend.aclose()
    # OUTPOST_NAMESPACE (the chart's setting) wins over the context's namespace.
    other = PodBackend(Config(), namespace="elsewhere", connection=connection)
    assert await other.default_namespace() == "elsewhere"


@pytest.mark.parametrize(
    ("template", "host"),
    [
        ("{name}.{namespace}.svc.{cluster_domain}", HOST),
        ("{name}.{namespace}.svc.cluster.local.", HOST + "."),
        ("{name}.{namespace}.svc", f"jupyter-alice--srv.{NAMESPACE}.svc"),
        ("{name}.{namespace}", f"jupyter-alice--srv.{NAMESPACE}"),
        ("{name}", "jupyter-alice--srv"),  # the outpost's namespace is the pods': it resolves to the Service
        ("JUPYTER-{username}--{servername}.{namespace}.SVC", f"JUPYTER-alice--srv.{NAMESPACE}.SVC"),
    ],
)
async def test_a_hub_may_shape_the_services_dns_name(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend], template: str, host: str
) -> None:
    started = await make_backend().start(spec(misc={"dns_name_template": template}), Recorder().save, Recorder().report)
    assert started.address == f"http://{host}:8888"
    assert objects(apiserver)["services"] == ["jupyter-alice--srv"]


@pytest.mark.parametrize(
    "template",
    [
        "outpost-api.{namespace}.svc.cluster.local",  # the outpost's own Service
        "kubernetes.default.svc.cluster.local",  # the API server
        "{name}.kube-system.svc.cluster.local",  # a Service of that name in another namespace
        "{name}.{namespace}.svc.evil.example",  # a domain the hub's owner controls (and points anywhere)
        "{name}.{namespace}.svc.cluster.local.evil.example",
        "{name}.{namespace}.pod.cluster.local",
        "evil.example.{name}.{namespace}.svc.cluster.local",
        "169.254.169.254",
        "127.0.0.1",
        "{username}.{namespace}",  # a name other than the Service's
    ],
)
async def test_any_other_published_name_is_refused_before_anything_is_created(
    apiserver: ApiServer, make_backend: Callable[..., PodBackend], template: str
) -> None:
    recorder = Recorder()
    with pytest.raises(HostNotAllowed, match="not a name of the server's Service jupyter-alice--srv"):
        await make_backend().start(spec(misc={"dns_name_template": template}), recorder.save, recorder.report)
    assert recorder.states == [] and recorder.progress == []
    assert [r for r in apiserver.requests if r.action != kmock.action.FETCH] == []


async def test_a_short_name_is_refused_when_the_pods_live_in_another_namespace(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    """`<service>` resolves in the namespace of whoever looks it up (the SSH daemon's), not the pods'."""
    backend = make_backend(namespace="user-pods")
    with pytest.raises(HostNotAllowed):
        await backend.start(spec(misc={"dns_name_template": "{name}"}), Recorder().save, Recorder().report)
    assert [r for r in apiserver.requests if r.action == kmock.action.CREATE] == []


async def test_extra_labels_and_annotations_cannot_forge_the_servers_identity(
    apiserver: ApiServer, kubelet: Kubelet, make_backend: Callable[..., PodBackend]
) -> None:
    forged = {"app.kubernetes.io/managed-by": "someone", "app.kubernetes.io/component": "api",
              "outpost.jupyter.org/hub": "hubB", "hub.jupyter.org/username": "bob",
              "hub.jupyter.org/servername": "other", "outpost.jupyter.org/start-id": "9",
              "outpost.jupyter.org/name": "other"}  # fmt: skip
    start = spec(misc={"extra_labels": forged, "extra_annotations": forged})
    await make_backend().start(start, Recorder().save, Recorder().report)
    for plural in ("pods", "services", "secrets"):
        metadata = apiserver.live(plural)[NAMESPACE, "jupyter-alice--srv"]["metadata"]
        assert {key: metadata["labels"][key] for key in forged if key in metadata["labels"]} == {
            "app.kubernetes.io/managed-by": "jupyterhub-outpost", "app.kubernetes.io/component": "singleuser-server",
            "outpost.jupyter.org/hub": "hubA", "hub.jupyter.org/username": "alice",
            "hub.jupyter.org/servername": "srv", "outpost.jupyter.org/start-id": "1",
            "outpost.jupyter.org/name": "other",  # not an identity label: only an annotation names the server
        }  # fmt: skip
        identity = {key: metadata["annotations"][key] for key in forged if key.startswith("outpost.")}
        assert identity == {"outpost.jupyter.org/hub": "hubA", "outpost.jupyter.org/start-id": "1",
                            "outpost.jupyter.org/name": "srv"}  # fmt: skip
        assert metadata["annotations"]["hub.jupyter.org/username"] == "alice"
    service = apiserver.live("services")[NAMESPACE, "jupyter-alice--srv"]
    assert service["spec"]["selector"]["outpost.jupyter.org/hub"] == "hubA"
    assert [sid for sid, _ in await make_backend().running()] == [ServiceId("hubA", "srv", "1")]

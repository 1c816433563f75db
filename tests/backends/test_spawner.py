"""Any JupyterHub Spawner as the backend: jupyterhub's LocalProcessSpawner with a real process, and
KubeSpawner against kmock's emulator (the test plays the kubelet)."""

from __future__ import annotations

import asyncio
import base64
import getpass
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import psutil
import pytest
import pytest_asyncio
from jupyterhub.spawner import Spawner  # type: ignore[import-untyped]
from traitlets.config import Config

from outpost import names
from outpost.backends.base import StartSpec
from outpost.backends.spawner import SpawnerBackend, resolve
from outpost.errors import AddressTaken, BackendError, ConfigurationError, HostNotAllowed
from outpost.models import ServiceId
from tests.backends.kubernetes.conftest import NAMESPACE, ApiServer, Kubelet
from tests.conftest import TINY_SERVER
from tests.support.recorder import Recorder

pytestmark = pytest.mark.asyncio(loop_scope="session")
# What the OutpostSpawner sends by default (its custom_misc).
HUB_MISC = {
    "dns_name_template": "{name}.{namespace}.svc.cluster.local",
    "pod_name_template": "jupyter-{username}--{servername}",
    "internal_ssl": False, "port": 8888, "ip": "0.0.0.0", "services_enabled": True, "extra_labels": {"team": "a"},
}  # fmt: skip


def spec(user: str, name: str = "srv", start_id: str = "1", **fields: Any) -> StartSpec:
    env = {
        "JUPYTERHUB_API_TOKEN": "secret-api-token",
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_USER_ID": "7",
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/{user}/{name}/",
        "JUPYTERHUB_API_URL": "http://hub.example.org/hub/api",
        "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:1/user/{user}/{name}/",  # the hub's guess; the spawner decides
    }
    return StartSpec(sid=ServiceId("hubA", name, start_id), env=env, **fields)


# --- LocalProcessSpawner: a real process ----------------------------------------------------------


def local_config(**traits: Any) -> Config:
    config = Config()
    config.LocalProcessSpawner.cmd = [sys.executable, str(TINY_SERVER)]
    config.LocalProcessSpawner.interrupt_timeout = 2
    config.LocalProcessSpawner.term_timeout = 2
    for key, value in traits.items():
        setattr(config.LocalProcessSpawner, key, value)
    return config


async def answer(address: str, path: str) -> dict[str, Any]:
    """The server's reply, once it listens (JupyterHub itself waits for it the same way)."""
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                reply: dict[str, Any] = (await client.get(f"{address}{path}")).json()
                return reply
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"nothing answers at {address}")


async def test_local_process_spawner_runs_a_real_server(tmp_path: Path) -> None:
    user = getpass.getuser()  # LocalProcessSpawner runs the server as that system user
    backend = SpawnerBackend(local_config(environment={"EXTRA": "1"}), "localprocess", tmp_path)
    recorder = Recorder()
    start = spec(user, misc={"port": 0, "ip": "127.0.0.1", "pod_name_template": "ignored"},
                 resources={"mem_limit": "1G", "cpu_limit": 2})  # fmt: skip
    started = await backend.start(start, recorder.save, recorder.report)

    assert started.address.startswith("http://127.0.0.1:")
    reply = await answer(started.address, f"/user/{user}/srv/")
    assert reply["user"] == user  # the hub's env reached the server; it binds where the spawner decided
    assert reply["limits"] == {"MEM_LIMIT": "1073741824", "CPU_LIMIT": "2.0"}  # the flavor's, via the traits
    assert recorder.progress == [(50, "Spawning server...")]  # the spawner's own progress() events
    assert recorder.states[0]["spawner"] == {}  # stored before the start, for a stop after a crash
    pid = started.state["spawner"]["pid"]
    assert started.state["overrides"] == {"port": 0, "ip": "127.0.0.1", "mem_limit": "1G", "cpu_limit": 2}
    assert psutil.Process(pid).environ()["JUPYTERHUB_API_TOKEN"] == "secret-api-token"

    assert await backend.poll(started.state) is None
    fresh = SpawnerBackend(local_config(), "localprocess", tmp_path)  # another invocation: load_state()
    assert await fresh.poll(started.state) is None
    await backend.stop(started.state)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert await backend.poll(started.state) == 0


async def test_a_local_spawners_address_is_published_only_when_its_own_process_listens_there(
    tmp_path: Path,
) -> None:
    """LocalProcessSpawner answers as soon as it has launched the process, with the port it was given: another
    process listening there (another hub's server, the outpost's API) would be published as the server."""
    backend = SpawnerBackend(local_config(), "localprocess", tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        recorder = Recorder()
        with pytest.raises(AddressTaken, match=re.escape(f"The address 127.0.0.1:{port} is already in use")):
            await backend.start(spec(getpass.getuser(), misc={"port": port, "ip": "127.0.0.1"}), recorder.save,
                                recorder.report)  # fmt: skip
    assert not [
        child for child in psutil.Process().children(recursive=True)
        if child.status() != psutil.STATUS_ZOMBIE and f":{port}/" in child.environ().get("JUPYTERHUB_SERVICE_URL", "")
    ]  # fmt: skip  # the server it launched is stopped


async def test_a_spawner_that_cannot_start_is_a_failed_start(tmp_path: Path) -> None:
    backend = SpawnerBackend(local_config(cmd=[str(tmp_path / "no-such-server")]), "localprocess", tmp_path)
    with pytest.raises(BackendError, match="FileNotFoundError"):
        await backend.start(spec(getpass.getuser(), misc={"port": 0}), Recorder().save, Recorder().report)


async def test_spawner_classes_by_name_path_or_class() -> None:
    from jupyterhub.spawner import LocalProcessSpawner
    from kubespawner import KubeSpawner

    assert resolve("localprocess") is LocalProcessSpawner
    assert resolve("kubespawner.KubeSpawner") is KubeSpawner
    assert resolve(KubeSpawner) is KubeSpawner
    with pytest.raises(ConfigurationError, match="cannot import spawner class 'nowhere.Spawner'"):
        resolve("nowhere.Spawner")
    with pytest.raises(ConfigurationError, match="is not a JupyterHub Spawner class"):
        resolve("collections.OrderedDict")


# --- KubeSpawner on the emulator ------------------------------------------------------------------


@pytest_asyncio.fixture
async def kubespawner_config(
    apiserver: ApiServer, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Config]:
    """KubeSpawner configured as an administrator would, pointed at the emulator by its kubeconfig."""
    from kubernetes_asyncio.config import kube_config
    from kubespawner import KubeSpawner

    # KUBECONFIG, as read when kubernetes_asyncio was imported (maybe by an earlier test).
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    config = Config()
    config.KubeSpawner.k8s_api_host = str(apiserver.url).rstrip("/")  # KubeSpawner caches its config per host
    config.KubeSpawner.namespace = NAMESPACE
    config.KubeSpawner.start_timeout = 10
    yield config
    # KubeSpawner keeps watches and clients per class and loop: end them before the emulator goes.
    for reflector in list(KubeSpawner.reflectors.values()):
        await reflector.stop()
    KubeSpawner.reflectors.clear()
    closers = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("close_client_task")]
    for task in closers:
        task.cancel()
    await asyncio.gather(*closers, return_exceptions=True)


@pytest.mark.parametrize("user", ["alice", "Alice.Smith@example.org"])
async def test_kubespawner_start_poll_stop(
    apiserver: ApiServer, kubelet: Kubelet, kubespawner_config: Config, tmp_path: Path, user: str
) -> None:
    backend = SpawnerBackend(kubespawner_config, "kubespawner.KubeSpawner", tmp_path)
    recorder = Recorder()
    started = await backend.start(spec(user, misc=dict(HUB_MISC)), recorder.save, recorder.report)

    # KubeSpawner named the pod exactly as our names module does, awkward user names included.
    expected = names.expand(HUB_MISC["pod_name_template"], names.template_fields(user, "7", "srv"))
    assert list(apiserver.live("pods")) == [(NAMESPACE, expected)]
    assert started.address == f"http://{expected}.{NAMESPACE}.svc.cluster.local:8888"
    assert started.state["spawner"] == {
        "kubespawner_version": started.state["spawner"]["kubespawner_version"],
        "pod_name": expected,
        "namespace": NAMESPACE,
        "dns_name": f"{expected}.{NAMESPACE}.svc.cluster.local",
    }
    pod = apiserver.live("pods")[NAMESPACE, expected]
    assert pod["metadata"]["labels"]["team"] == "a"  # misc's extra_labels reached the spawner's traits
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["JUPYTERHUB_API_TOKEN"] == "secret-api-token"
    assert env["JUPYTERHUB_SERVICE_URL"] == f"http://0.0.0.0:8888/user/{user}/srv/"
    messages = [message for _, message in recorder.progress]
    assert any(m.endswith(f"[Normal] Successfully assigned {NAMESPACE}/{expected} to node-1") for m in messages)

    assert await backend.poll(started.state) is None
    fresh = SpawnerBackend(kubespawner_config, "kubespawner.KubeSpawner", tmp_path)  # another invocation
    assert await fresh.poll(started.state) is None
    await fresh.stop(started.state)
    assert apiserver.live("pods") == {}
    assert await fresh.poll(started.state) == 1


async def test_kubespawner_with_internal_ssl(
    apiserver: ApiServer, kubelet: Kubelet, kubespawner_config: Config, tmp_path: Path
) -> None:
    backend = SpawnerBackend(kubespawner_config, "kubespawner.KubeSpawner", tmp_path)
    certs = {"keyfile": "KEY PEM", "certfile": "CERT PEM", "cafile": "NOTEBOOKS CA"}
    start = spec("alice", misc={**HUB_MISC, "internal_ssl": True}, certs=certs, trust_bundles={"hub-ca": "HUB CA"})
    started = await backend.start(start, Recorder().save, Recorder().report)

    assert started.address == f"https://jupyter-alice--srv.{NAMESPACE}.svc.cluster.local:8888"
    secret = apiserver.live("secrets")[NAMESPACE, "jupyter-alice--srv"]
    files = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert files == {"ssl.key": "KEY PEM", "ssl.crt": "CERT PEM", "notebooks-ca_trust.crt": "NOTEBOOKS CA\nHUB CA"}
    await backend.stop(started.state)
    assert not Path(started.state["certs_dir"]).exists()  # the certificate files went with the server


async def test_kubespawner_pod_that_never_gets_ready(
    apiserver: ApiServer, kubelet: Kubelet, kubespawner_config: Config, tmp_path: Path
) -> None:
    kubelet.default = "image"
    kubespawner_config.KubeSpawner.start_timeout = 1
    backend = SpawnerBackend(kubespawner_config, "kubespawner.KubeSpawner", tmp_path)
    with pytest.raises(BackendError, match="did not start in 1 seconds|did not start within 1 seconds"):
        await backend.start(spec("alice", misc=dict(HUB_MISC)), Recorder().save, Recorder().report)
    assert apiserver.live("pods") == {}  # removed after the failed start


@pytest.mark.parametrize(
    ("template", "admins", "accepted"),
    [
        ("{name}.{namespace}", None, True),
        ("{name}.{namespace}.svc.k8s.example", "{name}.{namespace}.svc.k8s.example", True),  # the admin's domain
        ("outpost-api.{namespace}.svc.cluster.local", None, False),
        ("{name}.{namespace}.svc.evil.example", "{name}.{namespace}.svc.k8s.example", False),
        ("{name}", None, False),  # resolves in the SSH daemon's namespace, which the adapter cannot know
    ],
)
async def test_kubespawner_publishes_only_its_services_name(
    apiserver: ApiServer, kubelet: Kubelet, kubespawner_config: Config, tmp_path: Path,
    template: str, admins: str | None, accepted: bool,
) -> None:  # fmt: skip
    if admins:
        kubespawner_config.KubeSpawner.dns_name_template = admins
    backend = SpawnerBackend(kubespawner_config, "kubespawner.KubeSpawner", tmp_path)
    start = spec("alice", misc={**HUB_MISC, "dns_name_template": template})
    if not accepted:
        with pytest.raises(HostNotAllowed, match="not a name of the server's Service jupyter-alice--srv"):
            await backend.start(start, Recorder().save, Recorder().report)
        assert [r for r in apiserver.requests if r.action == kmock.action.CREATE] == []
        return
    started = await backend.start(start, Recorder().save, Recorder().report)
    host = template.format(name="jupyter-alice--srv", namespace=NAMESPACE)
    assert started.address == f"http://{host}:8888"
    await backend.stop(started.state)


async def test_an_adopted_pod_s_address_is_proved_by_its_service_name(
    kubespawner_config: Config, tmp_path: Path
) -> None:
    """`prove_adopted` (import-upstream): the address must name the Service of the state's pod, at its port."""
    backend = SpawnerBackend(kubespawner_config, "kubespawner.KubeSpawner", tmp_path)
    pod = {"pod_name": "jupyter-alice--srv", "namespace": NAMESPACE}
    state = backend.adopted_state(ServiceId("hubA", "srv", "1"), {"JUPYTERHUB_USER": "alice"}, {}, pod)
    for host in (f"jupyter-alice--srv.{NAMESPACE}.svc.cluster.local", f"jupyter-alice--srv.{NAMESPACE}"):
        await backend.prove_adopted(state, f"http://{host}:8888", 1)
    for address in (
        f"http://outpost-api.{NAMESPACE}.svc.cluster.local:8888",  # another Service
        "http://127.0.0.1:8888",
        "http://jupyter-alice--srv:8888",  # resolves in whoever looks it up's namespace
        f"http://jupyter-alice--srv.{NAMESPACE}.svc.cluster.local:2222",  # not the server's port
    ):
        with pytest.raises(HostNotAllowed):
            await backend.prove_adopted(state, address, 1)


class NoProcessNoPod(Spawner):  # type: ignore[misc]
    """A spawner whose servers run somewhere this outpost cannot look (a batch system's node)."""

    async def start(self) -> tuple[str, int]:
        return "node-1", 8888

    async def poll(self) -> None:
        return None

    async def stop(self, now: bool = False) -> None:
        return None


async def test_an_adopted_address_no_check_can_prove_is_refused(tmp_path: Path) -> None:
    backend = SpawnerBackend(Config(), NoProcessNoPod, tmp_path)
    state = backend.adopted_state(ServiceId("hubA", "srv", "1"), {"JUPYTERHUB_USER": "alice"}, {}, {})
    with pytest.raises(BackendError, match="runs neither a local process nor a pod"):
        await backend.prove_adopted(state, "http://node-1:8888", 1)

"""Fixtures on kmock's emulator (tests/backends/kubernetes/cluster.py): the API server, the kubelet the test plays,
connections, backends and the functions' runtime on them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
import pytest_asyncio
import yaml
from kubernetes import client as k8s
from traitlets.config import Config

from outpost.backends.kubernetes.backend import Connection, PodBackend
from outpost.runtime import Runtime, get_runtime
from outpost.settings import Settings
from tests.backends.kubernetes.cluster import (  # noqa: F401 (re-exported for the tests)
    NAMESPACE,
    ApiServer,
    Kubelet,
    exited_status,
    running_status,
    validate,
    waiting_status,
)


@pytest_asyncio.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    async with ApiServer() as server, kmock.Server(server):
        for plural, kind in (("pods", "Pod"), ("services", "Service"), ("secrets", "Secret"), ("events", "Event")):
            server.resources[f"v1/{plural}"] = kmock.ResourceInfo(namespaced=True, kind=kind)
        server["get", kmock.resource("v1/pods"), kmock.subresource("log")] << (
            lambda request: server.logs.get(request.name, "").encode()
        )
        yield server
    for obj in server.sent:  # every object the code under test sent must pass the API's schema
        validate(obj)


@pytest_asyncio.fixture
async def kubelet(apiserver: ApiServer) -> AsyncIterator[Kubelet]:
    kubelet = Kubelet(apiserver)
    task = asyncio.create_task(kubelet.run())
    yield kubelet
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def connection(apiserver: ApiServer) -> Connection:
    configuration = k8s.Configuration(host=str(apiserver.url).rstrip("/"))
    return Connection(configuration, NAMESPACE)


@pytest.fixture
def kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file for the emulator, with a context namespace (as `kubectl config` writes it)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "kmock", "cluster": {"server": str(apiserver.url).rstrip("/")}}],
                "users": [{"name": "tester", "user": {"token": "not-checked"}}],
                "contexts": [
                    {"name": "test", "context": {"cluster": "kmock", "user": "tester", "namespace": NAMESPACE}}
                ],
            }
        )  # fmt: skip
    )
    return path


@pytest_asyncio.fixture
async def make_backend(connection: Connection) -> AsyncIterator[Callable[..., PodBackend]]:
    """A PodBackend on the emulator with short timeouts; options as `c.KubernetesBackend.<key>`."""
    made: list[PodBackend] = []

    def make(**options: Any) -> PodBackend:
        config = Config()
        config.KubernetesBackend.start_timeout = 5.0
        config.KubernetesBackend.start_poll_interval = 0.02
        for key, value in options.items():
            setattr(config.KubernetesBackend, key, value)
        backend = PodBackend(config, connection=connection)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


@pytest_asyncio.fixture
async def runtime(
    make_settings: Callable[..., Settings], make_backend: Callable[..., PodBackend], kubelet: Kubelet
) -> AsyncIterator[Runtime]:
    """The functions' runtime with the kubernetes backend on the emulator (what OUTPOST_BACKEND=kubernetes
    builds from a kubeconfig), and a kubelet that makes pods ready."""
    make_settings(timer_interval_seconds=60.0)
    runtime = await get_runtime()
    runtime.backend = make_backend()
    yield runtime


@pytest_asyncio.fixture
async def stack(router: Any, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The start, poll and stop functions behind one router, as in test_api, on that runtime."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://outpost") as client:
        yield client

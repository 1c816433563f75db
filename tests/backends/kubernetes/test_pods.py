"""The pure reading of a pod: its exit code, why it will never start, whether it is ready, its Secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from outpost.backends.kubernetes import manifests
from outpost.backends.kubernetes.backend import PodBackend
from outpost.backends.kubernetes.manifests import KubernetesBackend, ServerNames
from outpost.backends.kubernetes.pods import PodReader, pod_exit_code, pod_ready, secret_of, start_failure
from outpost.backends.local import LocalBackend
from tests.backends.kubernetes.conftest import exited_status, running_status, waiting_status


@pytest.mark.parametrize(
    ("pod", "code"),
    [
        (None, 1),
        ({"status": {"phase": "Pending"}}, None),
        ({"status": running_status({})}, None),
        ({"status": waiting_status("ContainerCreating", "")}, None),
        ({"status": {"phase": "Unknown"}}, None),
        ({"status": exited_status(0)}, 0),
        ({"status": exited_status(2)}, 2),
        ({"status": {"phase": "Failed", "reason": "Evicted"}}, 1),
        ({"status": {"phase": "Succeeded"}}, 0),
        ({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": running_status({})}, 1),
    ],
)
def test_pod_exit_code(pod: dict[str, Any] | None, code: int | None) -> None:
    assert pod_exit_code(pod) == code


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        ({"phase": "Pending"}, None),
        (waiting_status("ContainerCreating", ""), None),
        (waiting_status("ErrImagePull", "retrying"), None),  # the kubelet retries once before backing off
        (waiting_status("ImagePullBackOff", "Back-off pulling image"), "ImagePullBackOff: Back-off pulling image"),
        (waiting_status("CrashLoopBackOff", "back-off 10s"), "CrashLoopBackOff: back-off 10s"),
        (waiting_status("InvalidImageName", ""), "InvalidImageName: the container cannot start"),
        (exited_status(1), "the server exited with code 1 (Error)"),
        ({"phase": "Failed", "reason": "Evicted", "message": "low on memory"},
         "the server exited with code unknown (Evicted): low on memory"),
        (running_status({}), None),
    ],
)  # fmt: skip
def test_start_failure(status: dict[str, Any], failure: str | None) -> None:
    assert start_failure({"status": status}) == failure


def test_pod_ready() -> None:
    assert pod_ready({"status": running_status({})})
    assert not pod_ready({"status": {**running_status({}), "phase": "Pending"}})
    assert not pod_ready({"metadata": {"deletionTimestamp": "x"}, "status": running_status({})})
    not_ready = running_status({})
    not_ready["containerStatuses"][0]["ready"] = False
    assert not pod_ready({"status": not_ready})


@pytest.mark.parametrize("ssl", [True, False])
def test_secret_of_names_the_secret_the_pod_reads(ssl: bool) -> None:
    target = ServerNames("ns", "jupyter-alice", "alice-secret", "jupyter-alice.ns.svc.cluster.local")
    options = KubernetesBackend(config=Config())
    pod = manifests.make_pod(options, target, {}, {}, {"A": "1"}, ["JUPYTERHUB_API_TOKEN"], 8888, ssl)
    assert secret_of(pod) == "alice-secret"
    assert secret_of(manifests.make_pod(options, target, {}, {}, {"A": "1"}, [], 8888, False)) == ""


def test_only_the_kubernetes_backend_reads_pods(tmp_path: Path) -> None:
    assert isinstance(PodBackend(Config(), "ns"), PodReader)
    assert not isinstance(LocalBackend(Config(), tmp_path), PodReader)

"""kmock's Kubernetes API emulator and the runtime on it (tests/backends/kubernetes/conftest.py), for
the spawner adapter's KubeSpawner tests."""

from tests.backends.kubernetes.conftest import apiserver, kubeconfig, kubelet  # noqa: F401  (fixtures for the tests here)

"""kmock's Kubernetes API emulator and the runtime on it (tests/backends/kubernetes/conftest.py), for
the pod-status workflow's tests."""

from tests.backends.kubernetes.conftest import apiserver, connection, kubelet, make_backend, runtime, stack  # noqa: F401  (fixtures for the tests here)

"""Fixtures for the Helm chart tests: the real `helm` and a cached `helm template` (shared with tests/knative)."""

from __future__ import annotations

from tests.support.k8s_fixtures import crd_schemas, helm, render, run_helm  # noqa: F401  (fixtures for the tests here)

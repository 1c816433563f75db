"""Fixtures for the knative/ manifests, deploy.sh and the images: no cluster needed."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_checks import load_documents

from tests.support.k8s_fixtures import REPO, crd_schemas, helm, render, run_helm  # noqa: F401  (fixtures for the tests here)

KNATIVE = REPO / "knative"


@pytest.fixture(scope="session")
def manifests() -> dict[str, list[dict[str, Any]]]:
    """File name -> documents, for every YAML file in knative/."""
    return {path.name: load_documents(path.read_text()) for path in sorted(KNATIVE.glob("*.yaml"))}

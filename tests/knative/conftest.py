"""Fixtures for the knative/ manifests, deploy.sh and the images: no cluster needed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from k8s_checks import crd_dir, load_crd_schemas, load_documents  # noqa: E402

KNATIVE = REPO / "knative"


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    directory = crd_dir()
    if not directory.is_dir():
        pytest.skip(f"CRD schemas not found at {directory} (CI provides ../shared/crds); custom resources unchecked")
    return load_crd_schemas(directory)


@pytest.fixture(scope="session")
def manifests() -> dict[str, list[dict[str, Any]]]:
    """File name -> documents, for every YAML file in knative/."""
    return {path.name: load_documents(path.read_text()) for path in sorted(KNATIVE.glob("*.yaml"))}

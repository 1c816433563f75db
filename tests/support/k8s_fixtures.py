"""What the chart and Knative tests share: the repository's root and the CRD schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from k8s_checks import crd_dir, load_crd_schemas

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    directory = crd_dir()
    if not directory.is_dir():
        pytest.skip(f"CRD schemas not found at {directory} (CI provides ../shared/crds); custom resources unchecked")
    return load_crd_schemas(directory)

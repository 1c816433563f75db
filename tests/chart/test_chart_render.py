"""The chart lints, renders and validates for the seed's values, its defaults and maximal values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from k8s_checks import core_errors, cr_errors, find_objects, is_core, one_object

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "jupyterhub-outpost"
SEED_DOC = REPO.parent / "shared" / "reference" / "seed-installation.md"

# What an administrator types in place of the seed's placeholders.
PLACEHOLDERS = {
    "<enter the SSH public key from JupyterHub here>": (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhGVtnBw0uS4k0Bf3dWFq8pBvR6Kk0qbRXnD2k7rVxL jupyterhub"
    ),
    "<add your floating ip for the ssh connection in here>": "192.0.2.10",
    "<your hostname to reach the API Endpoint>": "outpost.example.org",
}
# The upstream Outpost's install guide's two values files, as users find them in charts/examples.
EXAMPLES = REPO / "charts" / "examples"
SEEDS = {"seed": EXAMPLES / "values.yaml", "seed-secure": EXAMPLES / "secure_values.yaml"}
MAXIMAL = {
    "ci": CHART / "ci" / "ci-values.yaml",
    "istio": CHART / "ci" / "istio-values.yaml",
    "sentinel": CHART / "ci" / "sentinel-values.yaml",
    "external-sentinel": CHART / "ci" / "external-sentinel-values.yaml",
}


@pytest.fixture(scope="session")
def filled_seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seed's values files with the placeholders filled in, keys untouched."""
    out = tmp_path_factory.mktemp("seeds")
    filled = {}
    for name, path in SEEDS.items():
        text = path.read_text()
        for placeholder, value in PLACEHOLDERS.items():
            text = text.replace(placeholder, value)
        filled[name] = out / path.name
        filled[name].write_text(text)
    return filled


@pytest.fixture(scope="session")
def value_sets(filled_seeds: dict[str, Path]) -> dict[str, tuple[Path, ...]]:
    return {
        "defaults": (),
        **{name: (path,) for name, path in SEEDS.items()},
        **{f"{name}-filled": (path,) for name, path in filled_seeds.items()},
        **{name: (path,) for name, path in MAXIMAL.items()},
    }


ALL_SETS = [
    "defaults",
    "seed",
    "seed-secure",
    "seed-filled",
    "seed-secure-filled",
    "ci",
    "istio",
    "sentinel",
    "external-sentinel",
]
# Sets whose host names and addresses are real enough for the CRD patterns.
CR_SETS = ["defaults", "seed-filled", "seed-secure-filled", "ci", "istio"]


def test_seed_fixtures_are_the_seed_documents_values() -> None:
    """The fixtures are byte for byte what the seed document tells administrators to write."""
    if not SEED_DOC.is_file():
        pytest.skip(f"{SEED_DOC} not present (CI provides ../shared/reference)")
    blocks = re.findall(r"cat <<EOF >> (\S+)\n(.*?)\nEOF", SEED_DOC.read_text(), flags=re.S)
    assert dict(blocks) == {
        "values.yaml": SEEDS["seed"].read_text().rstrip("\n"),
        "secure_values.yaml": SEEDS["seed-secure"].read_text().rstrip("\n"),
    }


@pytest.mark.parametrize("values", [None, *SEEDS.values(), *MAXIMAL.values()], ids=["defaults", *SEEDS, *MAXIMAL])
def test_helm_lint_strict(run_helm: Any, values: Path | None) -> None:
    args = ["lint", "--strict", CHART] + (["-f", values] if values else [])
    result = run_helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", ALL_SETS)
def test_every_core_object_is_valid(render: Any, value_sets: dict[str, tuple[Path, ...]], name: str) -> None:
    docs = render(*value_sets[name])
    core = [d for d in docs if is_core(d)]
    assert {"Deployment", "Service", "ConfigMap", "Role", "RoleBinding", "ServiceAccount"} <= {d["kind"] for d in core}
    errors = [e for d in core for e in core_errors(d)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", CR_SETS)
def test_every_custom_resource_matches_its_crd(
    render: Any, value_sets: dict[str, tuple[Path, ...]], crd_schemas: Any, name: str
) -> None:
    custom = [d for d in render(*value_sets[name]) if not is_core(d)]
    # Istio's VirtualService and prometheus-operator's ServiceMonitor have no CRD in knative/crds:
    # test_istio_virtual_service and test_the_service_monitor_scrapes_the_functions_with_the_token check them.
    unchecked = ("VirtualService", "ServiceMonitor")
    errors = [e for d in custom if d["kind"] not in unchecked for e in cr_errors(d, crd_schemas)]
    assert not errors, "\n".join(errors)


def test_secure_seed_gets_a_tls_gateway_with_its_annotations(render: Any, filled_seeds: dict[str, Path]) -> None:
    docs = render(filled_seeds["seed-secure"])
    gateway = one_object(docs, "Gateway")
    assert gateway["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-cluster-issuer"
    https = [listener for listener in gateway["spec"]["listeners"] if listener["protocol"] == "HTTPS"]
    assert [(lst["hostname"], lst["tls"]["certificateRefs"][0]["name"]) for lst in https] == [
        ("outpost.example.org", "outpost-tls")
    ]
    route = one_object(docs, "HTTPRoute")
    assert route["spec"]["hostnames"] == ["outpost.example.org"]
    # The API is attached to the HTTPS listener only.
    assert [ref["sectionName"] for ref in route["spec"]["parentRefs"]] == [https[0]["name"]]
    service = one_object(docs, "Service", "outpost-sshd")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerIP"] == "192.0.2.10"


def test_plain_seed_has_no_route_and_a_cluster_ip_ssh_service(render: Any) -> None:
    docs = render(SEEDS["seed"])
    assert not find_objects(docs, "HTTPRoute") and not find_objects(docs, "Gateway")
    assert one_object(docs, "Service", "outpost-sshd")["spec"]["type"] == "ClusterIP"
    config = one_object(docs, "ConfigMap", "outpost-config")["data"]["config.yaml"]
    assert "<enter the SSH public key from JupyterHub here>" in config


def test_release_name_without_outpost_gets_a_prefix(render: Any) -> None:
    docs = render(release="jh")
    assert one_object(docs, "Deployment")["metadata"]["name"] == "jh-outpost-sshd"
    assert one_object(docs, "Deployment", "jh-outpost-sshd")

"""The upstream chart's values: its docs' three examples install unchanged, and every extra lands where it should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_checks import core_errors, cr_errors, find_objects, is_core, one_object

from outpost.settings import SSHKeyEntry
from sshd.keys import AuthorizedKeys

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "jupyterhub-outpost"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
VALUES = Path(__file__).parent / "values"
# The upstream docs' examples (docs/usage/installation.md there): in-cluster hub, remote hub over NodePorts with
# option-prefixed keys, remote hub through an ingress with TLS and the SSH Service on a LoadBalancer.
EXAMPLES = {name: VALUES / f"upstream-{name}-values.yaml" for name in ("local", "remote", "ingress")}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one_object(docs, "Deployment", "outpost-sshd")["spec"]["template"]["spec"]
    return spec


def notes(run_helm: Any, *args: str) -> str:
    result = run_helm("install", "outpost", CHART, "--dry-run=client", "--namespace", "outpost", *args)
    assert result.returncode == 0, result.stderr
    return str(result.stdout.split("NOTES:", 1)[1])


@pytest.mark.parametrize("name", EXAMPLES)
def test_upstream_examples_lint_render_and_validate(run_helm: Any, render: Any, name: str) -> None:
    result = run_helm("lint", "--strict", CHART, "-f", EXAMPLES[name])
    assert result.returncode == 0, result.stdout + result.stderr
    docs = render(EXAMPLES[name])
    errors = [e for d in docs if is_core(d) for e in core_errors(d)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", EXAMPLES)
def test_upstream_examples_custom_resources_match_their_crds(render: Any, crd_schemas: Any, name: str) -> None:
    errors = [e for d in render(EXAMPLES[name]) if not is_core(d) for e in cr_errors(d, crd_schemas)]
    assert not errors, "\n".join(errors)


def test_remote_example_node_ports_and_keys(render: Any, run_helm: Any) -> None:
    """servicessh.ports.nodePort is the SSH node port; the option-prefixed key reaches the daemon's config
    and forwards; the API Service's NodePort is not rendered and NOTES say what to use instead."""
    docs = render(EXAMPLES["remote"])
    service = one_object(docs, "Service", "outpost-sshd")["spec"]
    assert service["type"] == "NodePort" and service["ports"][0]["nodePort"] == 30022
    assert {s["metadata"]["name"] for s in find_objects(docs, "Service")} == {"outpost-sshd", "outpost-redis"}
    config = yaml.safe_load(one_object(docs, "ConfigMap", "outpost-config")["data"]["config.yaml"])
    (line,) = config["sshPublicKeys"]
    assert line.startswith('restrict,port-forwarding,command="/bin/echo No commands allowed" ssh-ed25519 ')
    (described,) = AuthorizedKeys(config["sshPublicKeys"]).describe()
    assert "options=restrict,port-forwarding,command" in described
    text = notes(run_helm, "-f", str(EXAMPLES["remote"]))
    assert "c.OutpostSpawner.ssh_port = 30022" in text
    assert "service (NodePort, nodePort 30080): there is no API Service" in text
    assert "ingress.enabled and ingress.hosts" in text


def test_ingress_example_gets_tls_and_a_load_balancer(render: Any, run_helm: Any) -> None:
    docs = render(EXAMPLES["ingress"])
    gateway = one_object(docs, "Gateway")
    assert gateway["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-cluster-issuer"
    https = [lst for lst in gateway["spec"]["listeners"] if lst["protocol"] == "HTTPS"]
    assert [(lst["hostname"], lst["tls"]["certificateRefs"][0]["name"]) for lst in https] == [
        ("myremoteoutpost.com", "outpost-tls-certmanager")
    ]
    assert one_object(docs, "HTTPRoute")["spec"]["hostnames"] == ["myremoteoutpost.com"]
    service = one_object(docs, "Service", "outpost-sshd")["spec"]
    assert (service["type"], service["loadBalancerIP"], service["ports"][0]["port"]) == (
        "LoadBalancer",
        "192.0.2.20",
        22,
    )
    text = notes(run_helm, "-f", str(EXAMPLES["ingress"]))
    assert 'request_url = "https://myremoteoutpost.com/services"' in text
    assert 'ssh_node = "192.0.2.20"' in text and "accepts but does not use" not in text


def test_local_example_needs_nothing_else(render: Any, run_helm: Any) -> None:
    docs = render(EXAMPLES["local"])
    assert one_object(docs, "Service", "outpost-sshd")["spec"]["type"] == "ClusterIP"
    assert "accepts but does not use" not in notes(run_helm, "-f", str(EXAMPLES["local"]))


def test_extras_on_the_daemon(render: Any) -> None:
    """extraEnvVars, extraEnvVarsCMs/-Secrets, extraVolumes/-Mounts, initContainers, sidecars: appended to the daemon's
    own, the daemon's container first; the same lists, one JSON object a line, in <fullname>-extras for deploy.sh."""
    values = yaml.safe_load(CI_VALUES.read_text())
    docs = render(CI_VALUES)
    spec = pod_spec(docs)
    daemon, *sidecars = spec["containers"]
    assert daemon["name"] == "sshd" and sidecars == values["sidecars"]
    assert spec["initContainers"] == values["initContainers"]
    assert daemon["env"][-len(values["extraEnvVars"]) :] == values["extraEnvVars"]
    env_from = [
        *({"configMapRef": {"name": n}} for n in values["extraEnvVarsCMs"]),
        *({"secretRef": {"name": n}} for n in values["extraEnvVarsSecrets"]),
    ]
    assert daemon["envFrom"][1:] == env_from
    assert daemon["volumeMounts"][1:] == values["extraVolumeMounts"]
    assert spec["volumes"][1:] == values["extraVolumes"]
    extras = one_object(docs, "ConfigMap", "outpost-extras")["data"]
    as_lists = {key: [yaml.safe_load(line) for line in text.splitlines()] for key, text in extras.items()}
    assert as_lists == {
        "env": values["extraEnvVars"],
        "envFrom": env_from,
        "volumes": values["extraVolumes"],
        "volumeMounts": values["extraVolumeMounts"],
        "initContainers": values["initContainers"],
        "containers": values["sidecars"],
    }
    empty = one_object(render(), "ConfigMap", "outpost-extras")["data"]
    assert set(empty.values()) == {""}


def test_upstream_pod_settings_are_the_daemons_defaults(render: Any, run_helm: Any) -> None:
    """Upstream's top-level nodeSelector, tolerations, affinity, podAnnotations and imagePullSecrets place the
    daemon when its own sshd.* are empty; the rest is noted, never applied over the hardened pod."""
    sets = (
        "nodeSelector.zone=dmz",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
        "podAnnotations.team=hpc",
        "imagePullSecrets[0].name=regcred",
        "securityContext.runAsUser=0",
        "resources.limits.memory=4Gi",
        "image.repository=jupyterjsc/jupyterhub-outpost",
        "serviceAccount.create=true",
    )
    docs = render(sets=sets)
    spec = pod_spec(docs)
    assert spec["nodeSelector"] == {"zone": "dmz"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert one_object(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["team"] == "hpc"
    (daemon,) = spec["containers"]
    assert daemon["securityContext"]["readOnlyRootFilesystem"] is True and "runAsUser" not in daemon["securityContext"]
    assert daemon["resources"]["limits"]["memory"] == "256Mi"
    args = [a for pair in sets for a in ("--set", pair)]
    text = notes(run_helm, *args)
    for line in ("- image:", "- serviceAccount:", "- podSecurityContext/securityContext:", "- resources:"):
        assert line in text


def test_outpost_config_from_upstream_is_the_backend_configuration(render: Any) -> None:
    """outpostConfig is the backend's configuration file as it is; outpostConfigPath names one when it is empty."""
    config = 'c.JupyterHubOutpost.spawner_class = "kubespawner.KubeSpawner"\nc.KubeSpawner.image = "x"\n'
    docs = render(sets=(f"outpostConfig={config}",))
    assert one_object(docs, "ConfigMap", "outpost-config")["data"]["outpost_config.py"] == config
    assert (
        one_object(docs, "ConfigMap", "outpost-env")["data"]["OUTPOST_BACKEND_CONFIG"]
        == "/etc/outpost/outpost_config.py"
    )
    docs = render(sets=("outpostConfigPath=/mnt/outpost_config/outpost_config.py",))
    env = one_object(docs, "ConfigMap", "outpost-env")["data"]
    assert env["OUTPOST_BACKEND_CONFIG"] == "/mnt/outpost_config/outpost_config.py"


@pytest.mark.parametrize(
    "sets,expected",
    [
        (("servicessh.type=NodePort", "servicessh.ports.nodePort=30022"), 30022),
        (("servicessh.type=NodePort", "servicessh.ports.nodePort=30022", "servicessh.nodePort=30023"), 30023),
        (("servicessh.type=ClusterIP", "servicessh.ports.nodePort=30022"), None),
    ],
    ids=["alias", "ours-first", "cluster-ip"],
)
def test_servicessh_ports_node_port_is_an_alias(render: Any, sets: tuple[str, ...], expected: int | None) -> None:
    (port,) = one_object(render(sets=sets), "Service", "outpost-sshd")["spec"]["ports"]
    assert port.get("nodePort") == expected


def test_servicessh_extra_ports_and_enabled(render: Any) -> None:
    ports = one_object(render(CI_VALUES), "Service", "outpost-sshd")["spec"]["ports"]
    assert [p["name"] for p in ports] == ["ssh", "ssh-alt"]
    docs = render(sets=("servicessh.enabled=false",))
    assert not find_objects(docs, "Deployment") and not find_objects(docs, "Service", "outpost-sshd")


def test_extra_python_packages_are_refused_with_the_way_to_an_image(run_helm: Any) -> None:
    result = run_helm(
        "template", "outpost", CHART, "--set", "extraPythonPackages={jupyterhub-kubespawner==7.0.0,ldap3}"
    )
    assert result.returncode != 0
    assert "extraPythonPackages (jupyterhub-kubespawner==7.0.0, ldap3)" in result.stderr
    assert "RUN pip install --no-cache-dir jupyterhub-kubespawner==7.0.0 ldap3" in result.stderr
    assert "knative/deploy.sh --image" in result.stderr


def test_the_upstream_key_line_is_accepted_in_both_entry_forms() -> None:
    """What the chart passes on is what the daemon parses: the remote example's line, plain and for one hub."""
    (line,) = yaml.safe_load(EXAMPLES["remote"].read_text())["sshPublicKeys"]
    keys = AuthorizedKeys([line, SSHKeyEntry(hub="jupyterhub", key=line)])
    assert len(keys) == 1 and len(list(keys.describe())) == 2  # logins with it: tests/sshd/test_keys.py

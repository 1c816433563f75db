"""values.schema.json accepts the documented values and rejects unknown keys and wrong types."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "jupyterhub-outpost"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_FILES = [
    CHART / "values.yaml",
    CHART / "ci" / "ci-values.yaml",
    CHART / "ci" / "istio-values.yaml",
    *sorted((Path(__file__).parent / "values").glob("*.yaml")),
]


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_values_files_match_the_schema(path: Path) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMA)


def test_maximal_values_set_every_key_of_values_yaml() -> None:
    """ci-values.yaml is maximal: it sets every key values.yaml declares."""

    def keys(node: Any, prefix: str = "") -> set[str]:
        if not isinstance(node, dict) or not node:
            return set()
        return {f"{prefix}{k}" for k in node} | {x for k, v in node.items() for x in keys(v, f"{prefix}{k}.")}

    declared = keys(yaml.safe_load((CHART / "values.yaml").read_text()))
    maximal = keys(yaml.safe_load((CHART / "ci" / "ci-values.yaml").read_text()))
    assert declared - maximal == set()


def test_schema_forbids_unknown_keys_everywhere() -> None:
    """Every object in the schema that lists properties is closed, except free-form maps."""
    open_objects = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(SCHEMA, "")
    assert open_objects == [
        "/properties/redis/allOf/0/if",
        "/properties/redis/allOf/0/then",
        "/properties/redis/allOf/0/then/properties/external/oneOf/0",
        "/properties/redis/allOf/0/then/properties/external/oneOf/1",
        "/properties/redis/allOf/1/if",
        "/properties/redis/allOf/1/then",
    ]  # the per-mode conditions: they only constrain keys the closed redis object declares
    redis = SCHEMA["properties"]["redis"]
    for condition in redis["allOf"]:
        for part in (condition["if"], condition["then"]):
            assert set(part["properties"]) <= set(redis["properties"])
            for key, sub in part["properties"].items():
                for branch in sub.get("oneOf", [sub]):
                    declared = redis["properties"][key].get("properties", {})
                    assert set(branch.get("properties", {})) <= set(declared), key
                    assert set(branch.get("required", [])) <= set(declared), key


def test_every_values_key_is_commented() -> None:
    """Each key of values.yaml has a comment on the line above or at its end."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][\w.-]*:", line) and "#" not in line:
            previous = lines[number - 1].strip() if number else ""
            if not previous.startswith("#"):
                uncommented.append(f"{number + 1}: {line.strip()}")
    assert uncommented == []


@pytest.mark.parametrize(
    "args,message",
    [
        (("--set", "colour=blue"), "additional properties 'colour' not allowed"),
        (("--set", "sshd.replica=2"), "additional properties 'replica' not allowed"),
        (("--set", "servicessh.typo=1"), "additional properties 'typo' not allowed"),
        (("--set", "flavors.small.maxperuser=1"), "additional properties 'maxperuser' not allowed"),
        (("--set", "users.staff.forbiden=true"), "additional properties 'forbiden' not allowed"),
        (("--set", "settings.startTimeout=10"), "additional properties 'startTimeout' not allowed"),
        (("--set-string", "servicessh.port=22"), "/servicessh/port"),
        (("--set", "sshd.port=ssh"), "/sshd/port"),
        (("--set", "servicessh.type=External"), "/servicessh/type"),
        (("--set", "ingress.mode=nginx"), "/ingress/mode"),
        (("--set", "sshd.hostKey.type=dsa"), "/sshd/hostKey/type"),
        (("--set", "backend.type=docker"), "/backend/type"),
        (("--set", "backend.slurm.restUrl=file:///etc/passwd"), "/backend/slurm/restUrl"),
        (("--set", 'backend.slurm.restUrl=http://h:6820"\nimport os'), "/backend/slurm/restUrl"),
        (("--set", "backend.slurm.restUser=root;id"), "/backend/slurm/restUser"),
        (("--set", "servicessh.nodePort=80"), "/servicessh/nodePort"),
        (("--set", "redis.external.url=redis://:secret@host:6379"), "/redis/external/url"),
        (("--set", "redis.enabled=false"), "additional properties 'enabled' not allowed"),
        (("--set", "redis.mode=cluster"), "/redis/mode"),
        (("--set", "redis.sentinel.replicas=2"), "/redis/sentinel/replicas"),
        (("--set", "redis.sentinel.antiAffinity=always"), "/redis/sentinel/antiAffinity"),
        (("--set", "redis.external.sentinels[0]=no-port"), "/redis/external/sentinels/0"),
        (("--set", "redis.mode=external"), "/redis/external"),
        (("--set", "cryptSecret="), "/cryptSecret"),
        (("--set-string", "functions.trustedProxies=yes"), "/functions/trustedProxies"),
        (("--set", "functions.trustedProxies=40"), "/functions/trustedProxies"),
        (("--set", "sshPublicKeys[0].hub=a"), "/sshPublicKeys/0"),
        (("--set", "ingress.enabled=true"), "ingress.enabled needs at least one entry in ingress.hosts"),
        (
            ("--set", "redis.mode=external", "--set", "redis.external.sentinels[0]=s:26379"),
            "/redis/external",
        ),
        (("--set", "redis.mode=sentinel", "--set", "redis.sentinel.minReplicas=3"), "must be below"),
    ],
    ids=lambda a: a[1] if isinstance(a, tuple) else None,
)
def test_bad_values_are_rejected(run_helm: Any, args: tuple[str, ...], message: str) -> None:
    result = run_helm("template", "outpost", CHART, *args)
    assert result.returncode != 0, f"{args} was accepted"
    assert message in result.stderr

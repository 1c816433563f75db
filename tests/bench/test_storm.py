"""The start storm of bench/storm.py at a tiny size, against a real `outpost dev` and Redis: its accounting
(exact refusals, slots, nothing left behind), never its timings."""

from __future__ import annotations

from pathlib import Path

import httpx

from bench.outpost_dev import OutpostDev
from bench.stack import HUBS, basic_auth
from bench.storm import CAPPED, STORM_HUBS, MidStorm, RedisTarget, leftovers, make_plan, run
from outpost.cli.embedded_redis import EmbeddedRedis


def test_the_plan_asks_for_more_than_the_limits_allow() -> None:
    plan = make_plan(12)
    assert len(plan.starts) == 12 and {s.hub for s in plan.starts} == set(STORM_HUBS)
    assert plan.cap == 4
    assert plan.expected_refusals() == {"FlavorFull": 2, "UserOverLimit": 2}
    assert len(plan.admitted()) == 8


def test_a_small_storm_is_refused_exactly_as_the_limits_imply_and_leaves_nothing(tmp_path: Path) -> None:
    result = run(tmp_path / "storm", 12)
    assert result["start_answers"] == {"200": 8, "419 FlavorFull": 2, "419 UserOverLimit": 2}
    assert result["stop_answers"] == {"200": 8, "404 UnknownService": 4}
    assert result["backend_concurrency"] == 8 and result["outpost_start"]["n"] == 8
    assert result["leftovers"] == {"keys": [], "slots": [], "processes": [], "server_dirs": []}
    assert {name: check["ok"] for name, check in result["checks"].items()} == {
        "errors": True,
        "limits held": True,
        "slots = servers started": True,
        "started servers poll as running": True,
        "nothing left": True,
        "refusals exact": True,
    }, result["checks"]


def test_what_is_left_is_seen_while_a_server_runs(tmp_path: Path) -> None:
    """The storm's final check is not empty by construction: a running server shows in each part."""
    embedded = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    target = RedisTarget.from_url(embedded.url)
    hubs = {"hub0": HUBS["hub0"]}
    plan = make_plan(3)
    start = next(s for s in plan.starts if s.hub == "hub0" and s.flavor == CAPPED)
    client = target.client()
    try:
        with OutpostDev(tmp_path, hubs, plan.values(), target.env).running() as dev:
            auth = {"Authorization": basic_auth("hub0")}
            with httpx.Client(base_url=dev.url, headers=auth, timeout=60) as api:
                assert api.post("/services", json=start.body()).status_code == 200
                left = leftovers(client, [dev.data_dir])
                assert api.delete(f"/services/{start.name}/1").status_code == 200
            after = leftovers(client, [dev.data_dir])
    finally:
        client.close()
        embedded.stop()
    assert any(key.endswith(f":svc:{start.name}:1") for key in left["keys"]), left
    assert left["slots"] and len(left["processes"]) >= 1 and len(left["server_dirs"]) == 1, left
    assert after == {"keys": [], "slots": [], "processes": [], "server_dirs": []}


def test_a_mid_storm_action_runs_while_the_starts_are_answered(tmp_path: Path) -> None:
    """The failover variant's hook: here it only notes how many servers run when it fires; the
    accounting holds as without it (the refusals' exactness is not checked with an action)."""
    embedded = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    target = RedisTarget.from_url(embedded.url)
    seen: list[int] = []

    async def count_records() -> None:
        client = target.client()
        try:
            seen.append(sum(1 for _ in client.scan_iter(match="outpost:hub:*:svc:*")))
        finally:
            client.close()

    try:
        result = run(tmp_path / "storm", 12, target, MidStorm(count_records, phase="start", after=0.5))
    finally:
        embedded.stop()
    assert len(seen) == 1 and 1 <= seen[0] <= 8  # after 6 of 12 answers: some records, at most the 8 admitted
    assert result["mid_storm"] == {"phase": "start", "after": 0.5}
    assert "refusals exact" not in result["checks"]
    assert all(check["ok"] for check in result["checks"].values()), result["checks"]

"""The start storm of bench/storm.py at a tiny size, against a real `outpost dev` and Redis: its accounting
(exact refusals, slots, nothing left behind), never its timings."""

from __future__ import annotations

from pathlib import Path

import httpx

from bench.outpost_dev import OutpostDev
from bench.stack import HUBS, basic_auth
from bench.storm import CAPPED, STORM_HUBS, Answer, MidStorm, Observed, RedisTarget, leftovers, make_plan, run
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
        "records and servers = starts answered 200": True,
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
    accounting holds as without it, and with no 503 the refusals are exact."""
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
    assert result["checks"]["refusals exact"]["ok"], result["checks"]
    assert all(check["ok"] for check in result["checks"].values()), result["checks"]


def test_refusals_are_exact_where_no_503_interfered_and_bounded_where_one_did() -> None:
    """The refusal check of a storm during a failover: a start answered 503 may have held a slot while others
    were refused, so its limit's refusals are bounded, not exact; every other limit's are exact."""
    plan = make_plan(12)  # cap 4 of 6 capped starts; two per-user users of 3 starts each, max 2
    ok, full, over, busy = (
        Answer(200, "", 0.1),
        Answer(419, "FlavorFull", 0.1),
        Answer(419, "UserOverLimit", 0.1),
        (Answer(503, "ReplicasBehind", 0.1)),
    )

    def observed(answers: dict[str, Answer]) -> Observed:
        starts = [answers.get(s.name, ok) for s in plan.starts]
        for s, a in zip(plan.starts, starts, strict=True):
            if a is ok and s.name not in answers and s not in plan.admitted():
                starts[plan.starts.index(s)] = full if s.flavor == CAPPED else over
        return Observed(plan, None, starts, [], [], [], {}, {})

    assert observed({}).refusals_wrong() == []
    capped = [s.name for s in plan.starts if s.flavor == CAPPED]
    # one admitted capped start answered 503 after holding its slot while the last two were refused: bounded
    assert observed({capped[0]: busy}).refusals_wrong() == []
    # four refused with one started and one 503 cannot be right: 1 + 1 < cap 4
    wrong = observed({capped[0]: busy, capped[1]: Answer(200, "", 0.1), capped[2]: full, capped[3]: full})
    assert [line.split(":")[0] for line in wrong.refusals_wrong()] == [CAPPED]
    # a per-user user without a 503 refused one start too few: exactness is claimed there
    user = next(s for s in plan.starts if s.flavor != CAPPED and s not in plan.admitted())
    assert observed({user.name: ok}).refusals_wrong() == [f"{user.hub}/{user.user}: 3 started, 0 refused of 3, limit 2"]

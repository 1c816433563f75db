"""bench/hubload.py's arithmetic: what a round adds up to and the verdicts of the report (its load needs a
real hub and six servers; `python -m bench.hubload --quick` runs it)."""

from __future__ import annotations

from typing import Any

from bench.hubload import Samples, Tally, report


def test_a_sample_gives_the_median_rate_of_rounds_and_percentiles_of_all_operations() -> None:
    samples = Samples()
    for ms, errors in ((10.0, 0), (30.0, 2), (20.0, 1)):
        tally = Tally(errors=errors)
        tally.latencies["status"] = [ms / 1e3] * 10
        samples.add(tally, 2.0)
    figures = samples.figures()
    assert figures["ops_per_s"] == 5.0
    assert round(figures["p50_ms"], 6) == 20.0 and round(figures["p99_ms"], 6) == 30.0
    assert figures["errors"] == 3.0


def figures(ops: float, p50: float, p99: float) -> dict[str, float]:
    return {"ops_per_s": ops, "p50_ms": p50, "p99_ms": p99, "errors": 0.0}


def test_the_report_judges_ours_against_openssh_by_the_issues_goals() -> None:
    results: dict[str, Any] = {
        "modes": {
            "new-channel": {
                "direct": figures(200, 5, 20),
                "ours": figures(79, 6.1, 10),
                "openssh": figures(100, 5, 10),
            }
        }
    }
    lines = report(results).splitlines()
    assert [line.split()[-1] for line in lines[1:4]] == ["MISSED", "MISSED", "met"]  # 0.79x, 1.22x, 1.00x
    assert results["ratios_ours_to_openssh"]["new-channel"]["ops_per_s"] == 0.79

"""The caps before authentication, as pure decisions: MaxStartups' early drop, per-source counts,
and the refusal log's one line per source and minute."""

from __future__ import annotations

import logging

import pytest

from outpost.connlimits import EarlyDrop, RefusalLog, SourceCounts, source_of


def test_early_drop_is_openssh_start_rate_full() -> None:
    drop = EarlyDrop.parse("10:30:100")
    assert drop == EarlyDrop(10, 30, 100)
    never, always = (lambda: 0.999999), (lambda: 0.0)
    assert not drop.refuses(9, always)  # below start: every connection is admitted
    assert drop.refuses(10, always) and not drop.refuses(10, lambda: 0.30)  # 30% at start
    assert drop.refuses(55, lambda: 0.64) and not drop.refuses(55, lambda: 0.66)  # 65% half way
    assert drop.refuses(100, never) and drop.refuses(500, never)  # full: every one


def test_one_number_refuses_beyond_it() -> None:
    drop = EarlyDrop.parse("5")
    assert not drop.refuses(4, lambda: 0.0)
    assert drop.refuses(5, lambda: 0.999999)


def test_source_counts_cap_each_source_alone() -> None:
    counts = SourceCounts(2)
    assert counts.claim("a") and counts.claim("a") and not counts.claim("a")
    assert counts.claim("b")
    counts.release("a")
    assert counts.claim("a")
    assert counts["a"] == 2 and counts.total() == 3
    unlimited = SourceCounts(None)
    assert all(unlimited.claim("a") for _ in range(1000))


def test_ipv4_mapped_addresses_count_as_ipv4() -> None:
    assert source_of("::ffff:127.0.0.5") == "127.0.0.5"
    assert source_of("2001:db8::0001") == "2001:db8::1"


def test_refusal_log_says_each_source_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RefusalLog(logging.getLogger("tests.connlimits"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "tests.connlimits"):
        for _ in range(500):
            log.refused("127.0.0.5", "too many")
        log.refused("127.0.0.6", "too many")
        now[0] = 61.0
        log.refused("127.0.0.5", "too many", "closed")
    assert [r.getMessage() for r in caplog.records] == [
        "connection refused source=127.0.0.5: too many",
        "connection refused source=127.0.0.6: too many",
        "connection closed source=127.0.0.5: too many (499 more since the last line)",
    ]

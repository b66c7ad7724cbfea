from __future__ import annotations

from pulse.processors.watchdog import StallWatch

P0, P1 = ("raw", 0), ("raw", 1)


def test_a_partition_with_records_waiting_and_no_progress_is_reported_after_the_period() -> None:
    watch = StallWatch(stall_ms=30_000)
    state = {P0: (0, 50), P1: (20, 20)}  # P1 has read everything
    assert watch.check(0, state) == []
    assert watch.check(29_999, state) == []
    assert watch.check(30_000, state) == [P0]
    # re-armed: a seek that did not help is retried one period later, not every tick
    assert watch.check(31_000, state) == []
    assert watch.check(60_000, state) == [P0]


def test_progress_or_catching_up_restarts_the_clock() -> None:
    watch = StallWatch(stall_ms=10_000)
    watch.check(0, {P0: (0, 50)})
    assert watch.check(9_000, {P0: (5, 50)}) == []  # it moved: a new period starts
    assert watch.check(18_000, {P0: (5, 50)}) == []
    assert watch.check(19_000, {P0: (5, 50)}) == [P0]
    assert watch.check(20_000, {P0: (50, 50)}) == []  # caught up
    assert watch.check(40_000, {P0: (50, 60)}) == []  # new records: the clock starts now
    watch.reset()
    assert watch.check(45_000, {P0: (50, 60)}) == []


def test_slack_ignores_a_trailing_commit_marker() -> None:
    watch = StallWatch(stall_ms=1_000, slack=1)
    assert watch.check(0, {P0: (99, 100)}) == []
    assert watch.check(5_000, {P0: (99, 100)}) == []
    assert watch.check(6_000, {P0: (98, 100)}) == []
    assert watch.check(7_000, {P0: (98, 100)}) == [P0]

from __future__ import annotations

from processors.watchdog import Offsets, StallWatch

P0, P1 = ("raw", 0), ("raw", 1)


def test_offsets_start_at_the_committed_offset_else_the_earliest_record() -> None:
    assert Offsets(committed=40, low=10, high=100).start == 40
    assert Offsets(committed=None, low=10, high=100).start == 10
    assert Offsets(committed=-1001, low=0, high=5).waiting == 5  # librdkafka's "no offset"
    assert Offsets(committed=100, low=0, high=100).waiting == 0


def test_a_partition_with_records_waiting_is_reported_after_the_stall_period_only() -> None:
    watch = StallWatch(stall_ms=30_000)
    idle = {P0: Offsets(None, 0, 50), P1: Offsets(20, 0, 20)}  # P1 has nothing to read
    assert watch.check(0, idle) == []
    assert watch.check(29_999, idle) == []
    assert watch.check(30_000, idle) == [P0]
    # re-armed: a seek that did not help is retried one period later, not every tick
    assert watch.check(31_000, idle) == []
    assert watch.check(60_000, idle) == [P0]


def test_a_partition_that_starts_delivering_or_catches_up_is_forgotten() -> None:
    watch = StallWatch(stall_ms=10_000)
    watch.check(0, {P0: Offsets(None, 0, 50)})
    assert watch.check(5_000, {}) == []  # delivered an event: no longer idle
    assert watch.check(12_000, {P0: Offsets(None, 0, 50)}) == []  # the clock starts again
    assert watch.check(22_000, {P0: Offsets(None, 0, 50)}) == [P0]
    watch.reset()
    assert watch.check(23_000, {P0: Offsets(None, 0, 50)}) == []

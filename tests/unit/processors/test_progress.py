from __future__ import annotations

import pytest

from pulse.processors.progress import NO_WATERMARK, ReadingTracker, ReadProgress, Watermark

M = ("stocktwits.messages", 0)
S = ("stocktwits.sentiment", 0)


def tracker() -> ReadingTracker:
    t = ReadingTracker(idle_after_ms=2_000, quiet_after_ms=10_000)
    t.assign([M, S], now_ms=0)
    return t


def mark(t: ReadingTracker, tp: tuple[str, int], now_ms: int) -> ReadProgress:
    return next(m for m in t.marks(now_ms) if (m.topic, m.partition) == tp)


def test_new_partition_knows_nothing_and_is_not_idle() -> None:
    t = tracker()
    assert mark(t, M, 0) == ReadProgress(*M, offset=-1, event_ms=-1, idle=False, quiet=False)


def test_reads_move_offset_and_event_time_forward_only() -> None:
    t = tracker()
    t.on_read(M, next_offset=10, event_ms=500, now_ms=1)
    t.on_read(M, next_offset=8, event_ms=400, now_ms=2)  # an older answer never goes back
    m = mark(t, M, 3)
    assert (m.offset, m.event_ms) == (10, 500)


@pytest.mark.parametrize(
    "position, high, caught_up",
    [(10, 10, True), (11, 10, True), (9, 10, False), (-1, 0, True), (-1, 5, False)],
)
def test_caught_up_when_position_reaches_the_high_watermark(
    position: int, high: int, caught_up: bool
) -> None:
    t = tracker()
    t.on_position(M, position, high, now_ms=0)
    assert mark(t, M, 2_000).idle is caught_up


def test_idle_after_idle_after_ms_of_being_caught_up_and_reset_by_waiting_records() -> None:
    t = tracker()
    t.on_position(M, 10, 10, now_ms=1_000)
    assert not mark(t, M, 2_999).idle
    t.on_position(M, 10, 10, now_ms=3_000)  # still caught up: the clock keeps running
    assert mark(t, M, 3_000).idle
    t.on_position(M, 10, 12, now_ms=3_500)  # records waiting
    assert not mark(t, M, 3_500).idle
    t.on_position(M, 12, 12, now_ms=4_000)
    assert not mark(t, M, 5_999).idle and mark(t, M, 6_000).idle


def test_quiet_needs_the_idle_close_time_without_records() -> None:
    t = tracker()
    t.on_position(M, 0, 0, now_ms=0)
    assert mark(t, M, 9_999).idle and not mark(t, M, 9_999).quiet
    assert mark(t, M, 10_000).quiet
    t.on_read(M, 1, 50, now_ms=10_500)  # a record: the quiet clock restarts
    t.on_position(M, 1, 1, now_ms=10_500)
    assert mark(t, M, 10_600).idle and not mark(t, M, 20_499).quiet
    assert mark(t, M, 20_500).quiet


def test_broker_outage_is_never_quiet() -> None:
    t = tracker()
    t.on_position(M, 5, 5, now_ms=0)
    t.on_position(S, 0, 0, now_ms=0)
    assert mark(t, M, 9_000).idle
    # the broker stops answering at 9 s and stays away for a minute
    for now in range(9_000, 69_000, 500):
        t.on_unreachable()
        marks = t.marks(now)
        assert not any(m.quiet or m.idle for m in marks), now
    # back: caught up again, idle after idle_after_ms, quiet only after a full idle close
    t.on_position(M, 5, 5, now_ms=69_000)
    assert not mark(t, M, 70_999).idle and mark(t, M, 71_000).idle
    assert not mark(t, M, 78_999).quiet and mark(t, M, 79_000).quiet


def test_revoked_partitions_are_no_longer_reported() -> None:
    t = tracker()
    t.revoke([S])
    assert [(m.topic, m.partition) for m in t.marks(0)] == [M]
    t.on_position(S, 1, 1, now_ms=0)  # a late answer about a revoked partition
    assert len(t.marks(0)) == 1


def test_snapshot_and_restore_undo_an_aborted_batch() -> None:
    t = tracker()
    t.on_read(M, 10, 100, now_ms=1)
    snap = t.snapshot()
    t.on_read(M, 20, 900, now_ms=2)
    t.on_position(M, 20, 20, now_ms=2)
    t.restore(snap)
    m = mark(t, M, 3)
    assert (m.offset, m.event_ms, m.idle) == (10, 100, False)
    t.on_read(M, 30, 950, now_ms=4)  # the snapshot is a copy, not a view
    assert snap[M].offset == 10


def test_watermark_is_min_over_partitions_with_records_waiting_minus_grace() -> None:
    wm = Watermark(grace_ms=100)
    a = ReadProgress("m", 0, 10, 5_000, idle=False, quiet=False)
    b = ReadProgress("m", 1, 10, 2_000, idle=False, quiet=False)
    assert not wm.observe([a], raw_partitions=2) and wm.watermark_ms == NO_WATERMARK
    assert wm.observe([b], raw_partitions=2) and wm.watermark_ms == 1_900
    # the slow partition catches up and goes idle: the newest event time counts
    assert wm.observe([ReadProgress("m", 1, 12, 2_100, idle=True, quiet=False)], 2)
    assert wm.watermark_ms == 4_900
    assert not wm.all_quiet()


def test_tracker_marks_drive_a_watermark_through_an_outage() -> None:
    """End to end on the pure side: while the broker is down no partition is idle or
    quiet, so the watermark stays where the slowest partition holds it."""
    t = tracker()
    t.on_read(M, 5, 10_000, now_ms=0)
    t.on_read(S, 3, 4_000, now_ms=0)
    t.on_position(M, 5, 5, now_ms=0)
    t.on_position(S, 3, 3, now_ms=0)
    wm = Watermark(grace_ms=0)
    wm.observe(t.marks(3_000), raw_partitions=2)
    assert wm.watermark_ms == 10_000  # both idle: live traffic, newest counts
    t.on_unreachable()
    wm2 = Watermark(grace_ms=0)
    wm2.observe(t.marks(60_000), raw_partitions=2)
    assert wm2.watermark_ms == 4_000 and not wm2.all_quiet()

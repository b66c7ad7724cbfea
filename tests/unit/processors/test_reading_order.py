from __future__ import annotations

from pulse.processors.reading_order import Admission, ReadingOrder
from pulse.processors.watchdog import Offsets

P0, P1 = ("raw", 0), ("raw", 1)


def test_reading_stands_after_the_last_record_read_else_at_the_groups_start() -> None:
    read = ReadingOrder()
    read.admit(P0, 41)
    assert read.position(P0, Offsets(committed=10, low=0, high=100)) == 42
    fresh = ReadingOrder()
    assert fresh.position(P0, Offsets(committed=40, low=10, high=100)) == 40
    assert fresh.position(P0, Offsets(committed=None, low=10, high=100)) == 10
    assert fresh.position(P0, Offsets(committed=-1001, low=0, high=5)) == 0  # no offset
    # the committed record was deleted by retention: reading resets to the log start
    assert fresh.position(P0, Offsets(committed=3, low=10, high=50)) == 10


def test_records_are_read_once_and_in_offset_order() -> None:
    order = ReadingOrder()
    order.start(P0, 40)
    assert [order.admit(P0, o) for o in (40, 41, 41, 39, 42)] == [
        Admission.READ,
        Admission.READ,
        Admission.REPEAT,
        Admission.REPEAT,
        Admission.READ,
    ]
    assert order.expected(P0) == 43


def test_a_hole_is_sought_back_once_and_then_read_in_order() -> None:
    # the takeover seen in a test: 151-279 never delivered, 280 came next
    order = ReadingOrder()
    order.start(P0, 150)
    assert order.admit(P0, 150) is Admission.READ
    assert order.admit(P0, 280) is Admission.AHEAD
    assert order.needs_seek(P0) == 151
    assert order.admit(P0, 281) is Admission.AHEAD  # still queued from before the seek
    assert order.needs_seek(P0) is None  # one seek per hole
    assert [order.admit(P0, o) for o in range(151, 282)] == [Admission.READ] * 131
    assert order.admit(P0, 290) is Admission.AHEAD  # a new hole: a new seek
    assert order.needs_seek(P0) == 282


def test_a_first_record_beyond_where_reading_starts_is_a_hole() -> None:
    # a partition with no commit starts at the log start; faust began at 988 once
    order = ReadingOrder()
    order.start(P1, 0)
    assert order.admit(P1, 988) is Admission.AHEAD and order.needs_seek(P1) == 0
    fresh = ReadingOrder()  # start unknown: the first record is where reading starts
    assert fresh.admit(P1, 988) is Admission.READ


def test_transactional_topics_only_refuse_repeats() -> None:
    order = ReadingOrder()
    order.start(P0, 10)
    # a commit marker after each transaction: holes that are no one's to fill
    assert order.admit(P0, 10, contiguous=False) is Admission.READ
    assert order.admit(P0, 12, contiguous=False) is Admission.READ
    assert order.admit(P0, 11, contiguous=False) is Admission.REPEAT
    assert order.expected(P0) == 13


def test_a_reset_forgets_the_assignment() -> None:
    order = ReadingOrder()
    order.start(P0, 5)
    order.reset()
    assert order.expected(P0) is None and order.admit(P0, 99) is Admission.READ

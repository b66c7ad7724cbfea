"""Reading order, pure part: which records the signals agent processes, so that it sees each
partition's records once and in offset order whatever faust-streaming delivers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pulse.processors.watchdog import Offsets, Partition


class Admission(Enum):
    """What :meth:`ReadingOrder.admit` says of one record."""

    READ = "read"  # the next record of the partition: process it
    REPEAT = "repeat"  # already read in this assignment (delivered again): skip it
    AHEAD = "ahead"  # records before it were never delivered: skip it, read from the hole


@dataclass
class ReadingOrder:
    """Each partition's records exactly once and in offset order, per assignment.

    For topics written without transactions, whose offsets have no holes. faust-streaming can
    deliver a record twice after a rebalance, or skip a run of records (its read offset moved
    past records dropped from a queue, issue #596, or a reset to the wrong end): the next
    records then arrive *ahead* of where reading stands. Such records are not processed; the
    caller seeks the partition back to :meth:`expected` (once per hole) and the skipped
    records come again, in order.
    """

    _next: dict[Partition, int] = field(default_factory=dict)
    _seeking: dict[Partition, int] = field(default_factory=dict)

    def reset(self) -> None:
        self._next.clear()
        self._seeking.clear()

    def start(self, tp: Partition, offset: int) -> None:
        """Where reading of ``tp`` starts in this assignment (committed offset, else the
        first offset in the log): a first record beyond it is a hole too."""
        self._next[tp] = offset

    def expected(self, tp: Partition) -> int | None:
        return self._next.get(tp)

    def position(self, tp: Partition, offsets: Offsets) -> int:
        """Where reading of ``tp`` stands: after its last record read, else where the broker
        says reading starts (``offsets.start``)."""
        expected = self._next.get(tp)
        return expected if expected is not None else offsets.start

    def admit(self, tp: Partition, offset: int, *, contiguous: bool = True) -> Admission:
        """:param contiguous: False for a topic written in transactions, whose commit
        markers and aborted records leave holes that are not ours to fill: there only
        repeats are refused."""
        expected = self._next.get(tp)
        if expected is None or offset == expected or (offset > expected and not contiguous):
            self._next[tp] = offset + 1
            self._seeking.pop(tp, None)
            return Admission.READ
        return Admission.REPEAT if offset < expected else Admission.AHEAD

    def needs_seek(self, tp: Partition) -> int | None:
        """After an AHEAD: the offset to seek ``tp`` to, once per hole (None: already done)."""
        expected = self._next.get(tp)
        if expected is None or self._seeking.get(tp) == expected:
            return None
        self._seeking[tp] = expected
        return expected

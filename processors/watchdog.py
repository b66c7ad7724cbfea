"""Stalled-partition watchdog, pure part: which assigned partitions need a nudge.

faust-streaming 0.15 with aiokafka 0.14 can stop fetching a partition after a rebalance: the
partition is "active" in faust's eyes, yet no fetch is sent for it (upstream faust-streaming
issue #629). Seen here when a worker took over partitions of a dead one: either never read
(the group had no committed offset for them yet), or read for a while and then no more. The
worker looked healthy and idle while records waited.

The agents' timer, when its agents have had nothing to do for a while, compares where each
assigned partition's reading stands with the broker's high watermark; a partition with
records waiting and no progress for ``stall_ms`` is sought to where its reading stands. The
agents being idle is what makes the seek safe: no record of that partition is in flight, so
nothing is read twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Offsets:
    """What the broker says of one partition."""

    committed: int | None  # the group's committed offset; None when it has none
    low: int  # first offset still in the log
    high: int  # next offset to be written

    @property
    def start(self) -> int:
        """Where reading (re)starts: committed, else the earliest record (auto reset "earliest",
        also when the committed offset has been deleted by retention)."""
        if self.committed is None or self.committed < 0:
            return self.low
        return max(self.committed, self.low)


@dataclass
class StallWatch:
    """Partitions whose records wait while their reading position stays put for ``stall_ms``.

    ``slack`` records may wait forever without counting: a transaction's commit marker can sit
    at the end of a partition (exactly-once outputs, transactional producers) and is never
    delivered as a record.
    """

    stall_ms: int
    slack: int = 0
    _since: dict[Partition, tuple[int, int]] = field(default_factory=dict)  # → (pos, since)

    def reset(self) -> None:
        self._since.clear()

    def check(self, now_ms: int, positions: dict[Partition, tuple[int, int]]) -> list[Partition]:
        """``positions``: partition → (reading position, high watermark), of the assigned
        partitions. Returns those stuck for ``stall_ms``, each re-armed for another period."""
        due = []
        for tp in [tp for tp in self._since if tp not in positions]:
            del self._since[tp]
        for tp, (position, high) in sorted(positions.items()):
            if high - position <= self.slack:
                self._since.pop(tp, None)
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != position:
                self._since[tp] = (position, now_ms)
            elif now_ms - seen[1] >= self.stall_ms:
                due.append(tp)
                self._since[tp] = (position, now_ms)
        return due



class Verdict(Enum):
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

    def admit(self, tp: Partition, offset: int, *, contiguous: bool = True) -> Verdict:
        """:param contiguous: False for a topic written in transactions, whose commit
            markers and aborted records leave holes that are not ours to fill: there only
            repeats are refused."""
        expected = self._next.get(tp)
        if expected is None or offset == expected or (offset > expected and not contiguous):
            self._next[tp] = offset + 1
            self._seeking.pop(tp, None)
            return Verdict.READ
        return Verdict.REPEAT if offset < expected else Verdict.AHEAD

    def needs_seek(self, tp: Partition) -> int | None:
        """After an AHEAD: the offset to seek ``tp`` to, once per hole (None: already done)."""
        expected = self._next.get(tp)
        if expected is None or self._seeking.get(tp) == expected:
            return None
        self._seeking[tp] = expected
        return expected

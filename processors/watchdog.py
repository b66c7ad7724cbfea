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

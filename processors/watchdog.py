"""Stalled-partition watchdog, pure part: which assigned partitions need a nudge.

faust-streaming 0.15 with aiokafka 0.14 can leave a partition it was just assigned without a
fetch position when the group has no committed offset for it yet (a worker died before its
first commit): the partition is "active" in faust's eyes, yet no fetch is ever sent for it
(upstream faust-streaming issue #629). A worker that took over such a partition would never
read it. The agents' timer asks the broker for each idle partition's committed offset and high
watermark and seeks the ones this watch reports, which is what the missing offset reset would
have done.
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
        """Where reading (re)starts: committed, else the earliest record (auto reset)."""
        return self.committed if self.committed is not None and self.committed >= 0 else self.low

    @property
    def waiting(self) -> int:
        """Records the group has not read yet."""
        return max(0, self.high - self.start)


@dataclass
class StallWatch:
    """Partitions assigned, untouched by any event since, with records waiting for ``stall_ms``.

    Only partitions that delivered nothing since their assignment qualify: nothing of theirs is
    in flight, so a seek to the committed offset cannot replay records twice (also under
    exactly-once, where a replay within an open transaction would).
    """

    stall_ms: int
    _since: dict[Partition, int] = field(default_factory=dict)

    def reset(self) -> None:
        self._since.clear()

    def check(self, now_ms: int, idle: dict[Partition, Offsets]) -> list[Partition]:
        """``idle``: partitions with no event since assignment, with their offsets.
        Returns those stalled for ``stall_ms``; each is re-armed for another period."""
        stuck = {tp for tp, offsets in idle.items() if offsets.waiting > 0}
        for tp in [tp for tp in self._since if tp not in stuck]:
            del self._since[tp]
        due = []
        for tp in sorted(stuck):
            since = self._since.setdefault(tp, now_ms)
            if now_ms - since >= self.stall_ms:
                due.append(tp)
                self._since[tp] = now_ms
        return due

"""Pure: event-time progress of the raw partitions, and the watermark it gives.

The fan-out records, per raw partition it reads, the highest event time read so far and
whether the partition is caught up (nothing waiting, as the broker confirmed), and stamps
these marks on every mention batch it writes. The signals stage keeps the latest mark of
every raw partition and derives its watermark from them: the *minimum* event time over the
raw partitions that still have records waiting, minus the grace. A caught-up partition does
not hold the watermark back; when every partition is caught up, the newest event time read
anywhere counts (live traffic). This is Flink's watermark alignment across inputs, and what
Kafka Streams' ``max.task.idle.ms`` waits for: a replay at any speed over any number of
partitions closes the same windows as a live run, and the grace only has to cover upstream
disorder, never our own read skew.

Only wall-clock timers decide *idle* and *quiet*, and they run in the fan-out; the signals
stage sees their verdicts as data, so re-reading the log after a crash closes the same windows
at the same place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

NO_WATERMARK = -(2**62)  # before any event
RawPartition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class ReadProgress:
    """How far a fan-out has read one raw partition (mention_batch.avsc ``ReadProgress``)."""

    topic: str
    partition: int
    offset: int  # next offset to read
    event_ms: int  # highest event time read so far; -1 before any
    idle: bool  # caught up for a while: does not hold the watermark back
    quiet: bool  # idle, and no record for the idle-close time: open windows may close

    def to_avro(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> ReadProgress:
        return cls(**record)


# --- fan-out side ----------------------------------------------------------------------------


@dataclass
class _Reading:
    offset: int = -1
    event_ms: int = -1
    caught_up_since_ms: int | None = None  # confirmed by the broker without a break since
    last_record_ms: int = 0  # wall clock of the last record read (or of the assignment)


@dataclass
class ReadingTracker:
    """What one fan-out knows of the raw partitions assigned to it.

    :param idle_after_ms: how long a partition must be caught up before it stops holding the
        watermark back. The broker's answer can be a moment old while a producer is writing
        to several partitions at once; waiting this long lets the next fetch show new data.
    :param quiet_after_ms: how long a caught-up partition must go without a record before it
        is quiet (the idle close).
    """

    idle_after_ms: int
    quiet_after_ms: int
    readings: dict[RawPartition, _Reading] = field(default_factory=dict)

    def assign(self, partitions: list[RawPartition], now_ms: int) -> None:
        for tp in partitions:
            self.readings.setdefault(tp, _Reading(last_record_ms=now_ms))

    def revoke(self, partitions: list[RawPartition]) -> None:
        for tp in partitions:
            self.readings.pop(tp, None)

    def on_read(self, tp: RawPartition, next_offset: int, event_ms: int, now_ms: int) -> None:
        """Records of ``tp`` up to ``next_offset`` were read; ``event_ms`` the highest event
        time among them (-1: none had one)."""
        reading = self.readings.setdefault(tp, _Reading())
        reading.offset = max(reading.offset, next_offset)
        reading.event_ms = max(reading.event_ms, event_ms)
        reading.last_record_ms = now_ms

    def on_position(self, tp: RawPartition, position: int, high: int, now_ms: int) -> None:
        """The broker just said the log of ``tp`` ends at ``high``; we read from ``position``
        next (-1: not known yet, which with an empty log is caught up too)."""
        reading = self.readings.get(tp)
        if reading is None:
            return
        caught_up = position >= high or (position < 0 and high <= 0)
        if not caught_up:
            reading.caught_up_since_ms = None
        elif reading.caught_up_since_ms is None:
            reading.caught_up_since_ms = now_ms
        if position >= 0:
            reading.offset = max(reading.offset, position)

    def on_unreachable(self) -> None:
        """The broker could not be asked: nothing counts as caught up until it answers again
        (a broker outage is not a quiet stream)."""
        for reading in self.readings.values():
            reading.caught_up_since_ms = None

    def snapshot(self) -> dict[RawPartition, _Reading]:
        """A copy of what is known now, for :meth:`restore` (a transaction that aborts)."""
        return {tp: dataclasses.replace(r) for tp, r in self.readings.items()}

    def restore(self, snapshot: dict[RawPartition, _Reading]) -> None:
        """Back to ``snapshot`` for the partitions still assigned: an aborted transaction's
        reads are read again, and marks must not claim more than what was committed."""
        for tp in self.readings:
            if tp in snapshot:
                self.readings[tp] = dataclasses.replace(snapshot[tp])

    def marks(self, now_ms: int) -> list[ReadProgress]:
        """Every assigned partition's progress; idle and quiet as of ``now_ms``."""
        out = []
        for (topic, partition), r in sorted(self.readings.items()):
            since = r.caught_up_since_ms
            idle = since is not None and now_ms - since >= self.idle_after_ms
            quiet = (
                idle
                and since is not None
                and now_ms - max(since, r.last_record_ms) >= self.quiet_after_ms
            )
            out.append(ReadProgress(topic, partition, r.offset, r.event_ms, idle, quiet))
        return out


# --- signals side ----------------------------------------------------------------------------


@dataclass
class Watermark:
    """Watermark of one symbol partition, from the marks of every raw partition feeding it.

    Never goes back. Until every raw partition (``raw_partitions`` of the latest batch) has
    reported, there is none.
    """

    grace_ms: int
    watermark_ms: int = NO_WATERMARK
    raw_partitions: int = 0
    marks: dict[RawPartition, ReadProgress] = field(default_factory=dict)

    def observe(self, marks: list[ReadProgress], raw_partitions: int) -> bool:
        """Take a batch's marks; True when the watermark moved."""
        self.raw_partitions = max(self.raw_partitions, raw_partitions)
        for mark in marks:
            tp = (mark.topic, mark.partition)
            old = self.marks.get(tp)
            if old is not None and (old.event_ms > mark.event_ms or old.offset > mark.offset):
                # a re-read after a fan-out restart, or a former owner's late word: event
                # time never goes back, the idle verdict is the newest one
                mark = ReadProgress(
                    mark.topic,
                    mark.partition,
                    max(old.offset, mark.offset),
                    max(old.event_ms, mark.event_ms),
                    mark.idle,
                    mark.quiet,
                )
            self.marks[tp] = mark
        candidate = self.event_time_ms()
        if candidate is None or candidate - self.grace_ms <= self.watermark_ms:
            return False
        self.watermark_ms = candidate - self.grace_ms
        return True

    def complete(self) -> bool:
        return self.raw_partitions > 0 and len(self.marks) >= self.raw_partitions

    def event_time_ms(self) -> int | None:
        """How far every raw partition has been read, in event time (None: not known)."""
        if not self.complete():
            return None
        waiting = [m.event_ms for m in self.marks.values() if not m.idle]
        t = min(waiting) if waiting else max(m.event_ms for m in self.marks.values())
        return t if t >= 0 else None

    def all_quiet(self) -> bool:
        """Every raw partition is caught up and has had no record for the idle-close time."""
        return self.complete() and all(m.quiet for m in self.marks.values())

    def force(self, watermark_ms: int) -> None:
        """Idle close: jump to ``watermark_ms`` (closes everything open before it)."""
        self.watermark_ms = max(self.watermark_ms, watermark_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.watermark_ms,
            "raw_partitions": self.raw_partitions,
            "marks": [m.to_avro() for m in self.marks.values()],
        }

    @classmethod
    def from_json(cls, grace_ms: int, row: dict[str, Any] | None) -> Watermark:
        wm = cls(grace_ms)
        if row:
            wm.watermark_ms = row["watermark_ms"]
            wm.raw_partitions = row["raw_partitions"]
            for m in row["marks"]:
                mark = ReadProgress.from_avro(m)
                wm.marks[(mark.topic, mark.partition)] = mark
        return wm

"""Pure: one consumed batch of raw events → one MentionBatch record per symbol partition.

The fan-out (:mod:`processors.fanout`) feeds every decoded event of a batch to a
:class:`BatchBuilder`, which appends that event's mentions straight to the rows of their symbol
partitions (the same mentions as :func:`processors.mentions.mentions_of_message` and
:func:`~processors.mentions.mentions_of_sentiment`, without building a ``Mention`` per symbol:
this runs once per raw record). :func:`partition_records` then turns the rows and the reading
marks into the records to write, and :class:`MarksLedger` decides which symbol partitions need
a record although no mention is bound for them (their marks changed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pulse.processors.mentions import (
    ANY_SYMBOL,
    COLUMNS,
    MentionKind,
    MessageParts,
    distinct_names,
    distinct_symbols,
    message_parts,
    symbol_partition,
)
from pulse.processors.progress import ReadProgress

# A record stays well under Kafka's default 1 MB limit: a mention takes ~25-40 bytes encoded.
MAX_MENTIONS_PER_RECORD = 16_384
# While every raw partition a fan-out reads is quiet, its marks are written again this often
# (a record per symbol partition): the signals stage's idle close goes by the batch records'
# clock (processors/engine.py), so a quiet live stream's windows close as that clock passes
# their end + grace.
QUIET_REPEAT_MS = 5_000

_MESSAGE = MentionKind.MESSAGE.value
_RETRACTION = MentionKind.RETRACTION.value
_SCORE = MentionKind.SCORE.value

Row = tuple[str, str, int, int, "int | None", "str | None", "float | None"]  # COLUMNS order


@dataclass
class BatchBuilder:
    """Mentions of one batch, as rows per symbol partition, and counts by kind.

    :param partitions: how many symbol partitions there are.
    """

    partitions: int
    rows: list[list[Row]] = field(init=False)
    kinds: dict[str, int] = field(init=False)
    _partition_of: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Start a new batch (the symbol → partition cache is kept)."""
        self.rows = [[] for _ in range(self.partitions)]
        self.kinds = {_MESSAGE: 0, _RETRACTION: 0, _SCORE: 0}

    def partition(self, symbol: str) -> int:
        """Symbol partition of ``symbol``; murmur2 in Python is slow, so once per symbol."""
        p = self._partition_of.get(symbol)
        if p is None:
            p = self._partition_of[symbol] = symbol_partition(symbol, self.partitions)
        return p

    def add_message(self, event: dict[str, Any]) -> int:
        """Add the mentions of a decoded MessageEvent (see :meth:`add_message_parts`)."""
        return self.add_message_parts(message_parts(event))

    def add_message_parts(self, parts: MessageParts) -> int:
        """Add the mentions of a MessageEvent; returns its event time (the raw partition's
        progress, as :func:`processors.mentions.message_event_time_ms`).

        Raises ``ValueError`` for an unusable event, before any of its mentions is added.
        """
        create, message_id, event_ms, body = parts
        if body is None:
            if create:
                raise ValueError("create without a message body")
            row = (_RETRACTION, ANY_SYMBOL, message_id, event_ms, None, None, None)
            for rows in self.rows:  # symbols unknown: every partition resolves it by id
                rows.append(row)
            self.kinds[_RETRACTION] += self.partitions
            return event_ms
        kind = _MESSAGE if create else _RETRACTION
        t, user_id, sentiment, names = body
        symbols = distinct_names(names)
        for sym in symbols:
            self.rows[self.partition(sym)].append(
                (kind, sym, message_id, t, user_id, sentiment, None)
            )
        self.kinds[kind] += len(symbols)
        return t

    def add_sentiment(self, event: dict[str, Any]) -> int:
        """Add the SCORE mentions of a /sentiment event; returns its event time."""
        score = float(event["sentiment_score"])
        message_id = event["message_id"]
        t = event["created_at_ms"]
        user_id = event.get("user_id")
        symbols = distinct_symbols(event.get("symbols") or [])
        for sym in symbols:
            self.rows[self.partition(sym)].append(
                (_SCORE, sym, message_id, t, user_id, None, score)
            )
        self.kinds[_SCORE] += len(symbols)
        return int(t)


def columns(rows: list[Row]) -> dict[str, list[Any]]:
    """The mention columns of a MentionBatch record from rows (COLUMNS order)."""
    if not rows:
        return {name: [] for name in COLUMNS}
    return {name: list(col) for name, col in zip(COLUMNS, zip(*rows, strict=True), strict=True)}


def batch_record(
    rows: list[Row], marks: list[dict[str, Any]], raw_partitions: int
) -> dict[str, Any]:
    """A MentionBatch record (mention_batch.avsc)."""
    return {**columns(rows), "progress": marks, "raw_partitions": raw_partitions}


@dataclass
class MarksLedger:
    """The marks last written to each symbol partition, and when: an unchanged one gets no
    record, unless all of them are quiet and :data:`QUIET_REPEAT_MS` have passed."""

    sent: dict[int, list[ReadProgress]] = field(default_factory=dict)
    sent_at: dict[int, int] = field(default_factory=dict)

    def due(self, partition: int, marks: list[ReadProgress], now_ms: int) -> bool:
        if self.sent.get(partition) != marks:
            return True
        quiet = bool(marks) and all(m.quiet for m in marks)
        return quiet and now_ms - self.sent_at.get(partition, now_ms) >= QUIET_REPEAT_MS

    def note(self, partition: int, marks: list[ReadProgress], now_ms: int) -> None:
        self.sent[partition] = marks
        self.sent_at[partition] = now_ms

    def snapshot(self) -> tuple[dict[int, list[ReadProgress]], dict[int, int]]:
        return dict(self.sent), dict(self.sent_at)

    def restore(self, snapshot: tuple[dict[int, list[ReadProgress]], dict[int, int]]) -> None:
        self.sent, self.sent_at = dict(snapshot[0]), dict(snapshot[1])


def partition_records(
    builder: BatchBuilder,
    marks: list[ReadProgress],
    ledger: MarksLedger,
    raw_partitions: int,
    now_ms: int,
    max_mentions: int = MAX_MENTIONS_PER_RECORD,
) -> list[tuple[int, dict[str, Any]]]:
    """(symbol partition, MentionBatch record) to write for this batch, and note them sent.

    One record per partition with mentions, or whose marks are due (:meth:`MarksLedger.due`);
    none for a partition with neither. Rows beyond ``max_mentions`` go into extra records
    written first; they carry the partition's *previous* marks, which stay true, so that only
    the last record of the batch claims the new progress (the signals stage must not move its
    watermark before it has every mention read up to there).
    """
    out: list[tuple[int, dict[str, Any]]] = []
    new_marks = [m.to_avro() for m in marks]
    for p, rows in enumerate(builder.rows):
        if not rows and not ledger.due(p, marks, now_ms):
            continue
        previous = [m.to_avro() for m in ledger.sent.get(p, [])]
        start = 0
        while len(rows) - start > max_mentions:
            out.append(
                (p, batch_record(rows[start : start + max_mentions], previous, raw_partitions))
            )
            start += max_mentions
        out.append((p, batch_record(rows[start:], new_marks, raw_partitions)))
        ledger.note(p, marks, now_ms)
    return out

"""Stage 1, pure: raw message / sentiment events → per-symbol mentions, with de-duplication.

A message ``create`` yields one MESSAGE mention per distinct symbol; a ``destroy`` yields
RETRACTION mentions for the symbols the message was counted under; a /sentiment event yields
SCORE mentions. What stage 1 remembers about a message id is a :class:`Seen` row, kept in a
changelogged table and expired by event time so the state stays bounded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

# an idle-tick carries this symbol; it is a control record, not a mention of anything
TICK_SYMBOL = ""


class MentionKind(StrEnum):
    MESSAGE = "MESSAGE"
    RETRACTION = "RETRACTION"
    SCORE = "SCORE"
    TICK = "TICK"  # idle-timer control record written into its own mentions partition


@dataclass(frozen=True)
class Mention:
    """One symbol's share of a message (mention.avsc)."""

    kind: MentionKind
    symbol: str
    message_id: int
    created_at_ms: int
    user_id: int | None = None
    sentiment: str | None = None  # "Bullish", "Bearish" or None
    sentiment_score: float | None = None

    def to_avro(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Mention:
        return cls(
            kind=MentionKind(record["kind"]),
            symbol=record["symbol"],
            message_id=record["message_id"],
            created_at_ms=record["created_at_ms"],
            user_id=record.get("user_id"),
            sentiment=record.get("sentiment"),
            sentiment_score=record.get("sentiment_score"),
        )


def tick(last_offset: int) -> Mention:
    """Idle-close control record; ``last_offset`` is the last data offset the timer saw."""
    return Mention(MentionKind.TICK, TICK_SYMBOL, last_offset, 0)


@dataclass(frozen=True)
class Seen:
    """What stage 1 remembers about one message id (JSON-able table row)."""

    seen_ms: int  # event time used for expiry
    partition: int  # raw partition that owns the row, to rebuild the expiry queue
    symbols: tuple[str, ...] = ()
    created_at_ms: int = 0
    user_id: int | None = None
    sentiment: str | None = None
    destroyed: bool = False
    score: float | None = None  # /sentiment rows only
    offset: int = -1  # raw record that last wrote the row: tells a replay from a duplicate

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "symbols": list(self.symbols)}

    def replayed_mentions(self, message_id: int) -> list[Mention]:
        """The mentions the record that wrote this row published (re-sent on a replay)."""
        if self.score is not None:
            kind = MentionKind.SCORE
        else:
            kind = MentionKind.RETRACTION if self.destroyed else MentionKind.MESSAGE
        return [
            Mention(kind, sym, message_id, self.created_at_ms, self.user_id, self.sentiment,
                    self.score)
            for sym in self.symbols
        ]

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Seen:
        return cls(**{**row, "symbols": tuple(row["symbols"])})


def distinct_symbols(symbols: list[dict[str, Any]]) -> tuple[str, ...]:
    """Symbols of a message, upstream order, each once; case as upstream spells it."""
    out: list[str] = []
    for ref in symbols:
        sym = (ref.get("symbol") or "").strip()
        if sym and sym not in out:
            out.append(sym)
    return tuple(out)


def on_message_event(
    event: dict[str, Any], seen: Seen | None, partition: int, offset: int = -1
) -> tuple[Seen | None, list[Mention]]:
    """Apply one MessageEvent to what we remember of its id.

    :param offset: the raw record's offset. If the row was written by this very record, we
        are replaying after a crash: the row survived but the mentions may not have, so
        they are published again (stage 2 ignores ids it already has).
    :returns: the row to store (None: unchanged) and the mentions to publish.
    """
    message = event.get("message")
    message_id = event["message_id"]
    if seen is not None and offset >= 0 and seen.offset == offset:
        return None, seen.replayed_mentions(message_id)
    if event["action"] == "create":
        if seen is not None or message is None:  # duplicate, or create after destroy
            return None, []
        symbols = distinct_symbols(message.get("symbols") or [])
        user_id = message["user"]["id"]
        row = Seen(
            seen_ms=message["created_at_ms"],
            partition=partition,
            symbols=symbols,
            created_at_ms=message["created_at_ms"],
            user_id=user_id,
            sentiment=message.get("sentiment"),
            offset=offset,
        )
        mentions = [
            Mention(
                MentionKind.MESSAGE,
                sym,
                message_id,
                row.created_at_ms,
                user_id,
                row.sentiment,
            )
            for sym in symbols
        ]
        return row, mentions
    # destroy
    if seen is not None and seen.destroyed:
        return None, []
    if seen is not None:
        base = seen
    elif message is not None:
        base = Seen(
            seen_ms=message["created_at_ms"],
            partition=partition,
            symbols=distinct_symbols(message.get("symbols") or []),
            created_at_ms=message["created_at_ms"],
            user_id=message["user"]["id"],
            sentiment=message.get("sentiment"),
        )
    else:  # destroy of a message we never saw and without a body: remember the id only
        base = Seen(seen_ms=event["event_time_ms"], partition=partition)
    # stage 2 ignores a retraction of a message it never counted, so retracting when the
    # create was not seen (expired, or before our time) is safe
    retractions = [
        Mention(MentionKind.RETRACTION, sym, message_id, base.created_at_ms, base.user_id,
                base.sentiment)
        for sym in base.symbols
    ]
    tombstone = Seen(
        seen_ms=max(base.seen_ms, event["event_time_ms"]),
        partition=partition,
        symbols=base.symbols,
        created_at_ms=base.created_at_ms,
        user_id=base.user_id,
        sentiment=base.sentiment,
        destroyed=True,
        offset=offset,
    )
    return tombstone, retractions


def on_sentiment_event(
    event: dict[str, Any], seen: Seen | None, partition: int, offset: int = -1
) -> tuple[Seen | None, list[Mention]]:
    """Apply one /sentiment event: one SCORE mention per symbol, once per message id."""
    if seen is not None:
        if offset >= 0 and seen.offset == offset:  # replay after a crash: publish again
            return None, seen.replayed_mentions(event["message_id"])
        return None, []
    symbols = distinct_symbols(event.get("symbols") or [])
    row = Seen(seen_ms=event["created_at_ms"], partition=partition, symbols=symbols,
               created_at_ms=event["created_at_ms"], user_id=event.get("user_id"),
               score=float(event["sentiment_score"]), offset=offset)
    mentions = [
        Mention(MentionKind.SCORE, sym, event["message_id"], row.created_at_ms, row.user_id,
                None, float(event["sentiment_score"]))
        for sym in symbols
    ]
    return row, mentions


@dataclass
class ExpiryQueue:
    """Per raw partition: table keys in arrival order, to forget ids older than the TTL.

    Event time, not wall-clock time, decides expiry so replays behave like live runs.
    """

    ttl_ms: int
    max_seen_ms: int = 0
    _queue: deque[tuple[int, str]] = field(default_factory=deque)

    def add(self, key: str, seen_ms: int) -> None:
        self._queue.append((seen_ms, key))
        self.max_seen_ms = max(self.max_seen_ms, seen_ms)

    def expired(self) -> list[str]:
        """Keys whose rows may be dropped now (arrival order ≈ event order; a stale
        out-of-order entry just waits for the ones before it)."""
        horizon = self.max_seen_ms - self.ttl_ms
        out: list[str] = []
        while self._queue and self._queue[0][0] < horizon:
            out.append(self._queue.popleft()[1])
        return out

    def __len__(self) -> int:
        return len(self._queue)


def rebuild_expiry(rows: list[tuple[str, Seen]], ttl_ms: int) -> ExpiryQueue:
    """Expiry queue of one partition from its table rows (after a restart or rebalance)."""
    queue = ExpiryQueue(ttl_ms)
    for key, row in sorted(rows, key=lambda kr: kr[1].seen_ms):
        queue.add(key, row.seen_ms)
    return queue

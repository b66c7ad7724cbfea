"""Pure: raw message / sentiment events → per-symbol mentions, and mention batches as columns.

A message ``create`` yields one MESSAGE mention per distinct symbol; a ``destroy`` yields a
RETRACTION per symbol of its body, or one RETRACTION with an empty symbol when the destroy
carries no body (the signals stage finds the symbols by message id); a /sentiment event yields
SCORE mentions. Nothing here remembers anything: the signals stage's panes hold every counted
message id, so a repeated create or score is a no-op there and the fan-out can stay stateless.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, NamedTuple

from aiokafka import partitioner

# Kafka's default partitioner hash (key bytes → int); aiokafka ships no type information
murmur2: Callable[[bytes], int] = partitioner.murmur2

ANY_SYMBOL = ""  # a retraction whose symbols are unknown: resolved by message id downstream


class MentionKind(StrEnum):
    MESSAGE = "MESSAGE"
    RETRACTION = "RETRACTION"
    SCORE = "SCORE"
    TICK = "TICK"  # kept in the enum for schema compatibility; no longer written


class Mention(NamedTuple):
    """One symbol's share of a message (mention.avsc). A named tuple: a batch decodes into
    thousands of them, and a frozen dataclass costs ~3x as much to build."""

    kind: MentionKind
    symbol: str
    message_id: int
    created_at_ms: int
    user_id: int | None = None
    sentiment: str | None = None  # "Bullish", "Bearish" or None
    sentiment_score: float | None = None

    def to_avro(self) -> dict[str, Any]:
        return {**self._asdict(), "kind": self.kind.value}

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


def distinct_symbols(symbols: list[dict[str, Any]]) -> tuple[str, ...]:
    """Symbols of a message, upstream order, each once; case as upstream spells it."""
    return distinct_names([ref.get("symbol") or "" for ref in symbols])


def distinct_names(names: list[str]) -> tuple[str, ...]:
    """:func:`distinct_symbols` of the symbols' names."""
    out: list[str] = []
    for name in names:
        sym = name.strip()
        if sym and sym not in out:
            out.append(sym)
    return tuple(out)


# What the fan-out reads of a MessageEvent (message_event.avsc): (action is "create",
# message_id, event_time_ms, body), body None for a destroy without one, else (created_at_ms,
# user id, sentiment label, symbol names in upstream order). The native reader
# (processors/message_reader.py) returns these from the Avro bytes; message_parts from a
# decoded record.
Body = tuple[int, int, "str | None", list[str]]
MessageParts = tuple[bool, int, int, "Body | None"]


def message_parts(event: dict[str, Any]) -> MessageParts:
    """The :data:`MessageParts` of a decoded MessageEvent."""
    message = event.get("message")
    body: Body | None = None
    if message is not None:
        body = (
            message["created_at_ms"],
            message["user"]["id"],
            message.get("sentiment"),
            [ref.get("symbol") or "" for ref in message.get("symbols") or []],
        )
    return event["action"] == "create", event["message_id"], event["event_time_ms"], body


def message_event_time_ms(event: dict[str, Any]) -> int:
    """The event time a MessageEvent moves its raw partition's progress to."""
    message = event.get("message")
    event_ms: int = message["created_at_ms"] if message is not None else event["event_time_ms"]
    return event_ms


def mentions_of_message(event: dict[str, Any]) -> list[Mention]:
    """The mentions of one MessageEvent (message_event.avsc), create or destroy."""
    message = event.get("message")
    message_id = event["message_id"]
    if message is None:
        if event["action"] == "create":
            raise ValueError("create without a message body")
        return [Mention(MentionKind.RETRACTION, ANY_SYMBOL, message_id, event["event_time_ms"])]
    kind = MentionKind.MESSAGE if event["action"] == "create" else MentionKind.RETRACTION
    created_at_ms = message["created_at_ms"]
    user_id = message["user"]["id"]
    sentiment = message.get("sentiment")
    return [
        Mention(kind, sym, message_id, created_at_ms, user_id, sentiment)
        for sym in distinct_symbols(message.get("symbols") or [])
    ]


def mentions_of_sentiment(event: dict[str, Any]) -> list[Mention]:
    """The SCORE mentions of one /sentiment event (sentiment_event.avsc)."""
    score = float(event["sentiment_score"])
    return [
        Mention(
            MentionKind.SCORE,
            sym,
            event["message_id"],
            event["created_at_ms"],
            event.get("user_id"),
            None,
            score,
        )
        for sym in distinct_symbols(event.get("symbols") or [])
    ]


_KINDS = {k.value: k for k in MentionKind}
COLUMNS = (
    "kind",
    "symbol",
    "message_id",
    "created_at_ms",
    "user_id",
    "sentiment",
    "sentiment_score",
)


def to_columns(mentions: list[Mention]) -> dict[str, list[Any]]:
    """The mention columns of a MentionBatch record (mention_batch.avsc)."""
    return {
        "kind": [m.kind.value for m in mentions],
        "symbol": [m.symbol for m in mentions],
        "message_id": [m.message_id for m in mentions],
        "created_at_ms": [m.created_at_ms for m in mentions],
        "user_id": [m.user_id for m in mentions],
        "sentiment": [m.sentiment for m in mentions],
        "sentiment_score": [m.sentiment_score for m in mentions],
    }


def from_columns(record: dict[str, Any]) -> list[Mention]:
    """The mentions of a decoded MentionBatch record, in order."""
    kinds = [_KINDS[k] for k in record["kind"]]
    return [Mention(*row) for row in zip(kinds, *(record[c] for c in COLUMNS[1:]), strict=True)]


def symbol_partition(symbol: str, partitions: int) -> int:
    """Symbol partition of a symbol: Kafka's default (murmur2) partitioner on its UTF-8 key.

    The fan-out writes each mention to this partition and the signals stage uses it to find
    which table rows belong to a partition, so the two can never disagree.
    """
    return (murmur2(symbol.encode()) & 0x7FFFFFFF) % partitions

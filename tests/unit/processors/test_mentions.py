from __future__ import annotations

from typing import Any

import pytest

from processors.mentions import (
    ExpiryQueue,
    Mention,
    MentionKind,
    Seen,
    distinct_symbols,
    on_message_event,
    on_sentiment_event,
    rebuild_expiry,
)


def create(message_id: int, symbols: list[str], t: int = 1_000, user: int = 7,
           sentiment: str | None = "Bullish") -> dict[str, Any]:
    return {
        "action": "create", "message_id": message_id, "event_time_ms": t,
        "message": {"id": message_id, "created_at_ms": t, "user": {"id": user},
                    "symbols": [{"symbol": s} for s in symbols], "sentiment": sentiment},
    }


def destroy(message_id: int, t: int = 5_000, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"action": "destroy", "message_id": message_id, "event_time_ms": t, "message": body}


@pytest.mark.parametrize(
    "symbols, expected",
    [(["AAPL", "TSLA", "AAPL"], ("AAPL", "TSLA")), ([], ()), (["", " BTC.X "], ("BTC.X",))],
)
def test_distinct_symbols(symbols: list[str], expected: tuple[str, ...]) -> None:
    assert distinct_symbols([{"symbol": s} for s in symbols]) == expected


def test_create_fans_out_one_mention_per_distinct_symbol() -> None:
    row, mentions = on_message_event(create(1, ["AAPL", "TSLA", "AAPL"]), None, partition=2)
    assert row is not None and row.partition == 2 and row.symbols == ("AAPL", "TSLA")
    assert mentions == [
        Mention(MentionKind.MESSAGE, "AAPL", 1, 1_000, 7, "Bullish"),
        Mention(MentionKind.MESSAGE, "TSLA", 1, 1_000, 7, "Bullish"),
    ]


@pytest.mark.parametrize(
    "seen",
    [Seen(1_000, 0, ("AAPL",), 1_000, 7), Seen(1_000, 0, ("AAPL",), 1_000, 7, destroyed=True)],
)
def test_create_of_a_known_id_is_a_duplicate(seen: Seen) -> None:
    assert on_message_event(create(1, ["AAPL"]), seen, 0) == (None, [])


def test_destroy_retracts_what_was_counted_even_without_body() -> None:
    seen, _ = on_message_event(create(1, ["AAPL", "TSLA"]), None, 0)
    row, retractions = on_message_event(destroy(1), seen, 0)
    assert row is not None and row.destroyed and row.seen_ms == 5_000
    assert [(m.kind, m.symbol, m.created_at_ms, m.sentiment) for m in retractions] == [
        (MentionKind.RETRACTION, "AAPL", 1_000, "Bullish"),
        (MentionKind.RETRACTION, "TSLA", 1_000, "Bullish"),
    ]
    assert on_message_event(destroy(1), row, 0) == (None, [])  # destroyed twice


def test_destroy_of_unseen_message_uses_its_body_or_only_remembers_the_id() -> None:
    body = create(1, ["NVDA"])["message"]
    row, retractions = on_message_event(destroy(1, body=body), None, 0)
    assert [m.symbol for m in retractions] == ["NVDA"] and row is not None and row.destroyed
    row, retractions = on_message_event(destroy(2), None, 0)
    assert retractions == [] and row is not None and row.destroyed
    # a create arriving after its destroy is not counted
    assert on_message_event(create(2, ["NVDA"]), row, 0) == (None, [])


def test_sentiment_event_gives_one_score_per_symbol_once() -> None:
    event = {"message_id": 5, "user_id": 3, "created_at_ms": 9, "sentiment_score": 0.75,
             "symbols": [{"symbol": "AAPL"}, {"symbol": "MSFT"}]}
    row, mentions = on_sentiment_event(event, None, 1)
    assert [(m.kind, m.symbol, m.sentiment_score) for m in mentions] == [
        (MentionKind.SCORE, "AAPL", 0.75), (MentionKind.SCORE, "MSFT", 0.75)]
    assert on_sentiment_event(event, row, 1) == (None, [])


def test_seen_and_mention_round_trip() -> None:
    seen = Seen(1, 2, ("A", "B"), 3, None, "Bearish", True)
    assert Seen.from_json(seen.to_json()) == seen
    m = Mention(MentionKind.SCORE, "A", 1, 2, None, None, 0.5)
    assert Mention.from_avro(m.to_avro()) == m
    assert m.to_avro()["kind"] == "SCORE"


def test_expiry_forgets_ids_older_than_ttl_by_event_time() -> None:
    queue = ExpiryQueue(ttl_ms=100)
    queue.add("m1", 0)
    queue.add("m2", 50)
    assert queue.expired() == []
    queue.add("m3", 120)
    assert queue.expired() == ["m1"]
    queue.add("m4", 500)
    assert queue.expired() == ["m2", "m3"]
    assert len(queue) == 1


def test_rebuild_expiry_orders_rows_by_event_time() -> None:
    rows = [("b", Seen(200, 0)), ("a", Seen(100, 0)), ("c", Seen(1_000, 0))]
    queue = rebuild_expiry(rows, ttl_ms=500)
    assert queue.max_seen_ms == 1_000
    assert queue.expired() == ["a", "b"]

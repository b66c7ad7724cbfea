from __future__ import annotations

from typing import Any

import pytest

from pulse.processors.mentions import (
    ANY_SYMBOL,
    Mention,
    MentionKind,
    distinct_symbols,
    from_columns,
    mentions_of_message,
    mentions_of_sentiment,
    message_event_time_ms,
    symbol_partition,
    to_columns,
)


def create(
    message_id: int,
    symbols: list[str],
    t: int = 1_000,
    user: int = 7,
    sentiment: str | None = "Bullish",
) -> dict[str, Any]:
    return {
        "action": "create",
        "message_id": message_id,
        "event_time_ms": t + 5,
        "message": {
            "id": message_id,
            "created_at_ms": t,
            "user": {"id": user},
            "symbols": [{"symbol": s} for s in symbols],
            "sentiment": sentiment,
        },
    }


def destroy(message_id: int, t: int = 5_000, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"action": "destroy", "message_id": message_id, "event_time_ms": t, "message": body}


@pytest.mark.parametrize(
    "symbols, expected",
    [(["AAPL", "TSLA", "AAPL"], ("AAPL", "TSLA")), ([], ()), (["", " BTC.X "], ("BTC.X",))],
)
def test_distinct_symbols(symbols: list[str], expected: tuple[str, ...]) -> None:
    assert distinct_symbols([{"symbol": s} for s in symbols]) == expected


def test_create_gives_one_mention_per_distinct_symbol() -> None:
    assert mentions_of_message(create(1, ["AAPL", "TSLA", "AAPL"])) == [
        Mention(MentionKind.MESSAGE, "AAPL", 1, 1_000, 7, "Bullish"),
        Mention(MentionKind.MESSAGE, "TSLA", 1, 1_000, 7, "Bullish"),
    ]


def test_a_repeated_create_gives_the_same_mentions_again() -> None:
    # stateless: the signals stage drops the repeat by message id
    assert mentions_of_message(create(1, ["A"])) == mentions_of_message(create(1, ["A"]))


def test_destroy_with_body_retracts_each_symbol_at_its_created_at() -> None:
    body = create(1, ["NVDA", "AMD"])["message"]
    got = mentions_of_message(destroy(1, body=body))
    assert [(m.kind, m.symbol, m.created_at_ms) for m in got] == [
        (MentionKind.RETRACTION, "NVDA", 1_000),
        (MentionKind.RETRACTION, "AMD", 1_000),
    ]


def test_destroy_without_body_is_one_retraction_for_any_symbol() -> None:
    assert mentions_of_message(destroy(9, t=7_000)) == [
        Mention(MentionKind.RETRACTION, ANY_SYMBOL, 9, 7_000)
    ]


def test_create_without_body_is_an_error() -> None:
    with pytest.raises(ValueError):
        mentions_of_message(
            {"action": "create", "message_id": 1, "event_time_ms": 1, "message": None}
        )


@pytest.mark.parametrize("event, t", [(create(1, ["A"], t=10), 10), (destroy(1, t=99), 99)])
def test_message_event_time_is_created_at_or_the_envelope_time(
    event: dict[str, Any], t: int
) -> None:
    assert message_event_time_ms(event) == t


def test_sentiment_event_gives_one_score_per_symbol() -> None:
    event = {
        "message_id": 5,
        "user_id": 3,
        "created_at_ms": 9,
        "sentiment_score": 0.75,
        "symbols": [{"symbol": "AAPL"}, {"symbol": "MSFT"}, {"symbol": "AAPL"}],
    }
    assert [
        (m.kind, m.symbol, m.sentiment_score, m.user_id) for m in mentions_of_sentiment(event)
    ] == [(MentionKind.SCORE, "AAPL", 0.75, 3), (MentionKind.SCORE, "MSFT", 0.75, 3)]


def test_columns_round_trip() -> None:
    mentions = [
        Mention(MentionKind.MESSAGE, "A", 1, 2, 3, "Bearish"),
        Mention(MentionKind.SCORE, "B", 4, 5, None, None, -0.5),
        Mention(MentionKind.RETRACTION, ANY_SYMBOL, 6, 7),
    ]
    cols = to_columns(mentions)
    assert cols["kind"] == ["MESSAGE", "SCORE", "RETRACTION"]
    assert from_columns(cols) == mentions
    assert from_columns(to_columns([])) == []


def test_mention_avro_round_trip() -> None:
    m = Mention(MentionKind.SCORE, "A", 1, 2, None, None, 0.5)
    assert Mention.from_avro(m.to_avro()) == m
    assert m.to_avro()["kind"] == "SCORE"


@pytest.mark.parametrize("partitions", [1, 3, 6, 12])
def test_symbol_partition_is_stable_and_in_range(partitions: int) -> None:
    got = [symbol_partition(f"S{i}", partitions) for i in range(200)]
    assert all(0 <= p < partitions for p in got)
    assert got == [symbol_partition(f"S{i}", partitions) for i in range(200)]
    assert len(set(got)) == partitions  # 200 symbols reach every partition

from __future__ import annotations

import random
from typing import Any

import fastavro
import pytest

from pulse.processors.batching import (
    QUIET_REPEAT_MS,
    BatchBuilder,
    MarksLedger,
    columns,
    partition_records,
)
from pulse.processors.mentions import (
    ANY_SYMBOL,
    from_columns,
    mentions_of_message,
    mentions_of_sentiment,
    message_event_time_ms,
    symbol_partition,
)
from pulse.processors.progress import ReadProgress
from pulse.schemas.serde import load_schema

SYMS = ["AAPL", "TSLA", "SPY", "NVDA", "BTC.X", "GME", "AMC", "F", "QQQ"]


def message(
    mid: int, syms: list[str], action: str = "create", body: bool = True, t: int = 1_000
) -> dict[str, Any]:
    msg = None
    if body:
        msg = {
            "id": mid,
            "created_at_ms": t,
            "user": {"id": mid % 7 + 1},
            "symbols": [{"symbol": s} for s in syms],
            "sentiment": random.choice([None, "Bullish", "Bearish"]),
        }
    return {"action": action, "message_id": mid, "event_time_ms": t + 3, "message": msg}


def sentiment(mid: int, syms: list[str], t: int = 2_000) -> dict[str, Any]:
    return {
        "message_id": mid,
        "user_id": None,
        "created_at_ms": t,
        "sentiment_score": 0.25,
        "symbols": [{"symbol": s} for s in syms],
    }


def events(n: int, seed: int = 3) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    random.seed(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        syms = rng.choices(SYMS, k=rng.randint(0, 3))
        roll = rng.random()
        if roll < 0.6:
            out.append(("m", message(i, syms, t=1_000 + i)))
        elif roll < 0.7:
            out.append(("m", message(i - 1, syms, "destroy", t=1_000 + i)))
        elif roll < 0.8:
            out.append(("m", message(i - 2, [], "destroy", body=False, t=1_000 + i)))
        else:
            out.append(("s", sentiment(i, syms, t=1_000 + i)))
    return out


@pytest.mark.parametrize("partitions", [1, 3, 6])
def test_builder_gives_exactly_the_mentions_of_the_pure_functions(partitions: int) -> None:
    builder = BatchBuilder(partitions)
    expected: list[list[Any]] = [[] for _ in range(partitions)]
    for kind, event in events(500):
        if kind == "m":
            t = builder.add_message(event)
            assert t == message_event_time_ms(event)
            mentions = mentions_of_message(event)
        else:
            assert builder.add_sentiment(event) == event["created_at_ms"]
            mentions = mentions_of_sentiment(event)
        for m in mentions:
            targets = (
                range(partitions)
                if m.symbol == ANY_SYMBOL
                else [symbol_partition(m.symbol, partitions)]
            )
            for p in targets:
                expected[p].append(m)
    got = [from_columns(columns(rows)) for rows in builder.rows]
    assert got == expected
    assert sum(builder.kinds.values()) == sum(len(e) for e in expected)


def test_a_bad_event_adds_nothing() -> None:
    builder = BatchBuilder(3)
    with pytest.raises(ValueError):
        builder.add_message(message(1, ["A"], body=False))  # create without body
    bad = message(2, ["A", "B"])
    del bad["message"]["user"]
    with pytest.raises(KeyError):
        builder.add_message(bad)
    assert builder.rows == [[], [], []] and sum(builder.kinds.values()) == 0


def marks(offset: int, idle: bool = False, quiet: bool = False) -> list[ReadProgress]:
    return [ReadProgress("m", 0, offset, 1_000 + offset, idle or quiet, quiet)]


def test_one_record_per_partition_with_mentions_or_changed_marks() -> None:
    builder, ledger = BatchBuilder(3), MarksLedger()
    builder.add_message(message(1, ["AAPL"]))
    p = symbol_partition("AAPL", 3)
    first = partition_records(builder, marks(1), ledger, raw_partitions=6, now_ms=0)
    # first marks: every partition learns them; one of them has the mention
    assert [q for q, _ in first] == [0, 1, 2]
    assert {q: len(r["symbol"]) for q, r in first} == {q: int(q == p) for q in range(3)}
    assert all(r["raw_partitions"] == 6 and r["progress"][0]["offset"] == 1 for _, r in first)
    builder.clear()
    later = QUIET_REPEAT_MS * 10
    assert partition_records(builder, marks(1), ledger, 6, later) == []  # nothing changed
    idle = partition_records(builder, marks(1, idle=True), ledger, 6, later)
    assert [q for q, _ in idle] == [0, 1, 2]


def test_quiet_marks_are_written_again_as_the_clock_goes_on() -> None:
    builder, ledger = BatchBuilder(2), MarksLedger()
    assert len(partition_records(builder, marks(1, quiet=True), ledger, 6, 0)) == 2
    assert partition_records(builder, marks(1, quiet=True), ledger, 6, QUIET_REPEAT_MS - 1) == []
    again = partition_records(builder, marks(1, quiet=True), ledger, 6, QUIET_REPEAT_MS)
    assert [q for q, _ in again] == [0, 1]
    # idle but not quiet: the clock alone writes nothing
    partition_records(builder, marks(1, idle=True), ledger, 6, 2 * QUIET_REPEAT_MS)
    assert partition_records(builder, marks(1, idle=True), ledger, 6, 9 * QUIET_REPEAT_MS) == []
    # a rewind (exactly-once abort) restores when marks were last written, too
    snap = ledger.snapshot()
    partition_records(builder, marks(1, quiet=True), ledger, 6, 10 * QUIET_REPEAT_MS)
    ledger.restore(snap)
    assert ledger.sent_at == {0: 2 * QUIET_REPEAT_MS, 1: 2 * QUIET_REPEAT_MS}


def test_oversized_partitions_split_and_only_the_last_record_claims_new_progress() -> None:
    builder, ledger = BatchBuilder(1), MarksLedger()
    partition_records(builder, marks(0), ledger, 1, 0)
    for i in range(25):
        builder.add_message(message(i, ["AAPL"]))
    out = partition_records(builder, marks(25), ledger, 1, 0, max_mentions=10)
    assert [len(r["symbol"]) for _, r in out] == [10, 10, 5]
    assert [r["progress"][0]["offset"] for _, r in out] == [0, 0, 25]
    assert [m for _, r in out for m in r["message_id"]] == list(range(25))


def test_records_match_the_schema() -> None:
    builder = BatchBuilder(2)
    for kind, event in events(50):
        (builder.add_message if kind == "m" else builder.add_sentiment)(event)
    schema = fastavro.parse_schema(load_schema("mention_batch.avsc"))
    for _, record in partition_records(builder, marks(50), MarksLedger(), 6, 0):
        assert fastavro.validation.validate(record, schema)

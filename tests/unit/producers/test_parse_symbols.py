"""What a symbol may contain, enforced where upstream JSON becomes records (producers/parse.py).

A message, sentiment event or trending row naming a symbol outside :data:`parse.SYMBOL` is
rejected with ``invalid_record`` (dead-lettered whole, raw bytes kept); price entries, which
are decoration, are left out instead. Every symbol of the real captures and the seeds passes.
"""

from __future__ import annotations

import json
import re

import orjson
import pytest

from pulse.producers import parse
from tests.support.data import REAL_DATA, SEEDS
from tests.unit.producers.test_native import HOSTILE_SYMBOLS, PLAIN_SYMBOLS
from tests.unit.producers.test_parse import SAMPLE_MESSAGE


def real_symbols() -> set[str]:
    found: set[str] = set()
    files = [p for p in [*REAL_DATA.rglob("*"), *SEEDS.rglob("*")] if p.is_file()]
    for path in files:
        text = path.read_text(errors="replace")
        found |= set(re.findall(r'"symbol"\s*:\s*"((?:[^"\\]|\\.)*)"', text))
    return found


def test_every_symbol_in_the_real_captures_and_seeds_is_valid() -> None:
    symbols = real_symbols()
    assert len(symbols) >= 40 and {"BTC.X", "ES_F", "AAPL"} <= symbols
    assert [s for s in symbols if not parse.valid_symbol(s)] == []


@pytest.mark.parametrize("symbol", PLAIN_SYMBOLS)
def test_plain_symbols_pass(symbol: str) -> None:
    assert parse.valid_symbol(symbol)


def rest_page(symbol: str) -> bytes:
    good = {**SAMPLE_MESSAGE, "id": 1}
    bad = {**SAMPLE_MESSAGE, "id": 2, "symbols": [{"id": 9, "symbol": symbol}]}
    return orjson.dumps({"messages": [good, bad], "cursor": {"more": False}})


@pytest.mark.parametrize("symbol", HOSTILE_SYMBOLS, ids=lambda s: repr(s[:12]))
def test_a_hostile_symbol_rejects_its_message_and_only_it(symbol: str) -> None:
    page = parse.rest_stream(rest_page(symbol))
    assert [p.record["message_id"] for p in page.items] == [1]
    [rejected] = page.rejected
    assert rejected.error.reason.value == "invalid_record"
    assert "not a valid symbol" in str(rejected.error)
    assert json.loads(rejected.raw)["id"] == 2  # the raw item, kept for the dead-letter topic


@pytest.mark.parametrize("symbol", HOSTILE_SYMBOLS, ids=lambda s: repr(s[:12]))
def test_a_hostile_symbol_rejects_a_sentiment_event_and_a_trending_row(symbol: str) -> None:
    event = {"message_id": 5, "created_at": "2022-06-29T16:56:05Z", "sentiment_score": 0.5,
             "symbols": [{"symbol": symbol}]}  # fmt: skip
    with pytest.raises(parse.ParseError, match="not a valid symbol"):
        parse.sentiment_event(orjson.dumps(event))
    page = parse.trending_page(
        {"trending_symbols": [{"symbol": "AAPL"}, {"symbol": symbol}]}, snapshot_ms=0
    )
    assert [p.key for p in page.items] == ["AAPL"] and len(page.rejected) == 1


def test_the_error_text_is_bounded_and_escaped() -> None:
    with pytest.raises(parse.ParseError) as err:
        parse.symbol_ref({"symbol": "\x1b]8;;https://evil\x07" + "A" * 5000})
    text = str(err.value)
    assert "\x1b" not in text and "\x07" not in text and len(text) < 160
    assert "5018 chars" in text


def test_chart_points_refuse_an_invalid_configured_symbol() -> None:
    with pytest.raises(ValueError, match="not a valid symbol"):
        parse.chart_points({"data": {}}, symbol="[/]", zoom="1D", fetched_at_ms=0)

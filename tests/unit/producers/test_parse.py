"""producers.parse against the seeds' sample payloads, the real captured messages and bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.validation import validate

from pulse.producers import parse
from pulse.producers.parse import ParseError
from pulse.schemas.deadletter import Reason
from pulse.schemas.serde import load_schema
from pulse.schemas.topics import (
    LIKES,
    MESSAGES,
    RAW_SENTIMENT,
    SENTIMENT_CHART,
    SOCIAL,
    TRENDING,
    TopicSpec,
)
from tests.support.data import API_JSON, COLLECTOR, HISTORY, SEEDS

REAL_FILES = sorted(API_JSON.glob("*.json")) + sorted(COLLECTOR.glob("*.json"))


@cache
def _schema(schema_file: str) -> Any:
    return fastavro.parse_schema(load_schema(schema_file))


def assert_valid(spec: TopicSpec, record: dict[str, Any]) -> None:
    assert validate(record, _schema(spec.schema_file), raise_errors=True)


# --- seed samples: documentation with `// comments`, cleaned here ----------------------------


def _balanced(text: str, start: int) -> str:
    """The JSON object starting at text[start] == '{', up to its matching brace."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            esc, in_str = (False, in_str) if esc else (c == "\\", c != '"')
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    raise AssertionError("unbalanced JSON in seed")


def clean_json(text: str) -> Any:
    """Drop `// …` comments outside strings and trailing commas, then decode."""
    out, in_str, esc, i = [], False, False, 0
    while i < len(text):
        c = text[i]
        if in_str:
            esc, in_str = (False, in_str) if esc else (c == "\\", c != '"')
        elif c == '"':
            in_str = True
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        out.append(c)
        i += 1
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", "".join(out)))


def seed_sample(file: str, marker: str) -> Any:
    text = (SEEDS / file).read_text()
    at = text.index(marker)
    return clean_json(_balanced(text, text.index("{", at)))


def rest_seed_responses() -> Iterator[tuple[str, Any]]:
    text = (SEEDS / "rest-api-v2-streams.md").read_text()
    for n, block in enumerate(re.findall(r"```json\n(.*?)```", text, re.DOTALL)):
        if '"messages"' in block:
            yield f"block{n}", clean_json(block)


# --- Firehose /stream ------------------------------------------------------------------------

SAMPLE_MESSAGE = seed_sample("firehose-stream.txt", "StockTwits Post Activity")


def envelope(obj: str, data: Any, action: str = "create", **extra: Any) -> dict[str, Any]:
    return {
        "object": obj,
        "action": action,
        "data": data,
        "time": "2017-02-01T19:19:18Z",
        "seq_id": "49567487888076093524624994048752032346222860024699420674",
        **extra,
    }


def test_sample_message_create() -> None:
    spec, key, rec = parse.firehose_event(json.dumps(envelope("Message", SAMPLE_MESSAGE)))
    assert (spec, key) == (MESSAGES, "5556662")
    assert_valid(spec, rec)
    assert rec["action"] == "create" and rec["origin"] == "firehose"
    assert rec["event_time_ms"] == 1485976758000  # envelope time
    assert rec["seq_id"] == "49567487888076093524624994048752032346222860024699420674"
    msg = rec["message"]
    assert msg["created_at_ms"] == 1485976614000
    assert msg["sentiment"] == "Bullish"
    assert [s["symbol"] for s in msg["symbols"]] == ["ABC"]
    assert msg["symbols"][0]["trending_score"] == 16.4019
    assert msg["user"]["username"] == "StocksGuy" and msg["user"]["followers"] == 16
    assert msg["conversation"] == {
        "parent_message_id": 5555662,
        "in_reply_to_message_id": 73300365,
        "parent": False,
        "replies": 5,
    }
    assert msg["prices"] == [{"symbol": "ABC", "price": "29.84"}]
    assert msg["mentioned_users"] == ["@OtherPerson"]
    assert msg["source"] == {
        "id": 1149,
        "title": "StockTwits for iOS",
        "url": "http://www.stocktwits.com/mobile",
    }


def test_message_with_deprecated_score_chart_links_reshare() -> None:
    data = {
        **SAMPLE_MESSAGE,
        "sentiment": {"sentiment_score": 0.854},
        "entities": {"sentiment": None, "chart": {"url": "http://stks.co/g1Ye8"}},
        "links": [
            {"url": "https://x.test/a", "title": "t", "source": {"name": "X"}},
            {"title": "no url"},
        ],
        "reshare_message": {"reshared_count": 1, "message": {"id": 42}},
        "likes": {"total": 7},
    }
    rec = parse.firehose_event(envelope("Message", data)).record
    assert_valid(MESSAGES, rec)
    msg = rec["message"]
    assert (msg["sentiment"], msg["sentiment_score"]) == (None, 0.854)
    assert msg["chart_url"] == "http://stks.co/g1Ye8"
    assert msg["links"] == [
        {"url": "https://x.test/a", "title": "t", "shortened_url": None, "source_name": "X"}
    ]
    assert (msg["reshared_message_id"], msg["likes_count"]) == (42, 7)


@pytest.mark.parametrize("data", [{"id": 5556662}, {"id": "5556662"}, SAMPLE_MESSAGE])
def test_message_destroy_same_topic_and_key(data: dict[str, Any]) -> None:
    spec, key, rec = parse.firehose_event(envelope("Message", data, action="destroy"))
    assert (spec, key, rec["action"], rec["message_id"]) == (
        MESSAGES,
        "5556662",
        "destroy",
        5556662,
    )
    assert_valid(spec, rec)
    assert (rec["message"] is None) == (data is not SAMPLE_MESSAGE)


@pytest.mark.parametrize(
    "obj, marker, spec, key, expected",
    [
        (
            "LikeMessage",
            "LikeMessage Data Format",
            LIKES,
            "19037074",
            {"message_id": 73300225, "user_id": 654527, "liked_user_id": 364216},
        ),
        (
            "Friendship",
            "Friendship Data Format",
            SOCIAL,
            "FRIENDSHIP:19037074",
            {"kind": "FRIENDSHIP", "user_id": 654527, "target_user_id": 364216, "muted": None},
        ),
        (
            "Block",
            "Block Data Format",
            SOCIAL,
            "BLOCK:19037074",
            {"kind": "BLOCK", "user_id": 654527, "target_user_id": 364216, "muted": False},
        ),
    ],
)
@pytest.mark.parametrize("action", ["create", "destroy"])
def test_sample_like_friendship_block(
    obj: str, marker: str, spec: TopicSpec, key: str, expected: dict[str, Any], action: str
) -> None:
    text = (SEEDS / "firehose-stream.txt").read_text()
    at = text.index(marker)
    data = clean_json(_balanced(text, text.index('{\n  "id"', at)))
    got = parse.firehose_event(envelope(obj, data, action=action))
    assert (got.spec, got.key) == (spec, key)
    assert_valid(spec, got.record)
    assert got.record["action"] == action
    assert got.record["created_at_ms"] == 1450987201000
    assert got.record["event_time_ms"] == 1485976758000
    assert expected.items() <= got.record.items()


def test_envelope_without_seq_or_time_falls_back() -> None:
    env = {"object": "Message", "action": "create", "data": SAMPLE_MESSAGE}  # a backup line
    rec = parse.firehose_event(env).record
    assert (rec["seq_id"], rec["event_time_ms"]) == (None, 1485976614000)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"object": "Message", "action": "create", "data": {"id": 1,', Reason.INVALID_JSON),
        (b"\xff\xfe not utf-8", Reason.INVALID_JSON),
        (b"", Reason.INVALID_JSON),
        (b"[1, 2]", Reason.INVALID_RECORD),
        (b'"just a string"', Reason.INVALID_RECORD),
        (json.dumps(envelope("Watchlist", {"id": 1})).encode(), Reason.UNKNOWN_OBJECT),
        (json.dumps({"action": "create", "data": {}}).encode(), Reason.UNKNOWN_OBJECT),
        (
            json.dumps(envelope("Message", SAMPLE_MESSAGE, action="update")).encode(),
            Reason.INVALID_RECORD,
        ),
        (json.dumps(envelope("Message", None)).encode(), Reason.INVALID_RECORD),
        (json.dumps(envelope("Message", [1])).encode(), Reason.INVALID_RECORD),
        (
            json.dumps(envelope("Message", {"id": 1}, time="yesterday")).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {"id": 1})).encode(),
            Reason.INVALID_RECORD,
        ),  # create needs body
        (
            json.dumps(envelope("Message", {**SAMPLE_MESSAGE, "id": True})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {**SAMPLE_MESSAGE, "id": 1.5})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {**SAMPLE_MESSAGE, "body": 3})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {**SAMPLE_MESSAGE, "user": "bob"})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {**SAMPLE_MESSAGE, "user": {"id": 1}})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {**SAMPLE_MESSAGE, "created_at": None})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {**SAMPLE_MESSAGE, "symbols": "ABC"})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {**SAMPLE_MESSAGE, "symbols": [{"id": 1}]})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Message", {"id": "x"}, action="destroy")).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("LikeMessage", {"id": 1, "user_id": 2})).encode(),
            Reason.INVALID_RECORD,
        ),
        (
            json.dumps(envelope("Friendship", {"id": 1, "user_id": 2})).encode(),
            Reason.INVALID_RECORD,
        ),
        (b'{"object": "Message"' + b" " * parse.MAX_PAYLOAD_BYTES + b"}", Reason.TOO_LARGE),
    ],
)
def test_bad_firehose_input_raises_typed_error(raw: bytes, reason: Reason) -> None:
    with pytest.raises(ParseError) as exc:
        parse.firehose_event(raw)
    assert exc.value.reason is reason


def test_optional_fields_of_wrong_type_are_defaulted() -> None:
    data = {
        **SAMPLE_MESSAGE,
        "user": {
            **SAMPLE_MESSAGE["user"],
            "followers": "many",
            "official": "yes",
            "classification": None,
        },
        "conversation": "n/a",
        "source": 5,
        "entities": None,
        "prices": [{"price": 1}],
        "mentioned_users": [None, "@a"],
        "reshares": None,
    }
    rec = parse.firehose_event(envelope("Message", data)).record
    assert_valid(MESSAGES, rec)
    msg = rec["message"]
    assert (msg["user"]["followers"], msg["user"]["official"], msg["user"]["classification"]) == (
        None,
        False,
        [],
    )
    assert (msg["conversation"], msg["source"], msg["sentiment"], msg["prices"]) == (
        None,
        None,
        None,
        [],
    )
    assert (msg["mentioned_users"], msg["reshares_count"]) == (["@a"], 0)


@pytest.mark.parametrize(
    "value, ms",
    [
        ("2017-02-01T19:16:54Z", 1485976614000),
        ("2017-02-01T19:16:54", 1485976614000),
        ("2017-02-01T21:16:54+02:00", 1485976614000),
        ("2017-02-01T19:16:54.123Z", 1485976614123),
        ("2017-02-01T19:16:54.999999Z", 1485976614999),
        ("1970-01-01T00:00:00Z", 0),
        (1485976614, 1485976614000),
        (1485976614123, 1485976614123),
    ],
)
def test_timestamp_ms(value: Any, ms: int) -> None:
    assert parse.timestamp_ms(value) == ms


@pytest.mark.parametrize("value", [None, "", "soon", True, float("nan"), [], {}])
def test_timestamp_ms_rejects(value: Any) -> None:
    with pytest.raises(ParseError) as exc:
        parse.timestamp_ms(value)
    assert exc.value.reason is Reason.INVALID_RECORD


@pytest.mark.parametrize(
    "raw, seq",
    [
        (b'{"seq_id": "123", "object": "Nope"}', "123"),
        (b'{"seq_id": 7}', "7"),
        (b"{broken", None),
        (b"[]", None),
    ],
)
def test_seq_id_of(raw: bytes, seq: str | None) -> None:
    assert parse.seq_id_of(raw) == seq


# --- Firehose /sentiment ---------------------------------------------------------------------


def test_sample_sentiment_event() -> None:
    sample = seed_sample("firehose-sentiment-stream.txt", "Sample Payload")
    spec, key, rec = parse.sentiment_event(json.dumps(sample))
    assert (spec, key) == (RAW_SENTIMENT, "5556662")
    assert_valid(spec, rec)
    assert (rec["sentiment_score"], rec["user_id"], rec["created_at_ms"]) == (
        0.854,
        222222,
        1485976758000,
    )
    assert rec["seq_id"] == "49567487888076093524624994048752032346222860024699420674"
    assert (
        rec["symbols"][0]["symbol"] == "ABC"
        and rec["symbols"][0]["industry"] == "Personal Computers"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"sentiment_score": 1.5},
        {"sentiment_score": "0.5"},
        {"sentiment_score": None},
        {"sentiment_score": True},
        {"message_id": None},
        {"created_at": "x"},
        {"symbols": {}},
    ],
)
def test_bad_sentiment_event(change: dict[str, Any]) -> None:
    sample = {
        "message_id": 1,
        "created_at": "2017-02-01T19:19:18Z",
        "sentiment_score": 0.1,
        **change,
    }
    with pytest.raises(ParseError) as exc:
        parse.sentiment_event(sample)
    assert exc.value.reason is Reason.INVALID_RECORD


def test_sentiment_event_integer_score_becomes_double() -> None:
    rec = parse.sentiment_event(
        {"message_id": 1, "created_at": "2017-02-01T19:19:18Z", "sentiment_score": -1}
    ).record
    assert_valid(RAW_SENTIMENT, rec)
    assert rec["sentiment_score"] == -1.0 and isinstance(rec["sentiment_score"], float)


# --- trending symbols ------------------------------------------------------------------------


def test_sample_trending_page() -> None:
    sample = seed_sample("trending-symbols-api.txt", '"sample":')
    page = parse.trending_page(json.dumps(sample), snapshot_ms=1000, asset_class="all", region="US")
    assert (page.page, page.has_more, page.rejected) == (1, True, [])
    [(spec, key, rec)] = page.items
    assert (spec, key) == (TRENDING, "FIG")
    assert_valid(spec, rec)
    assert (rec["rank"], rec["trending_score"], rec["volume"], rec["price"]) == (
        1,
        19.78,
        30357600,
        23.66,
    )
    assert (rec["snapshot_ms"], rec["asset_class"], rec["region"]) == (1000, "all", "US")
    assert (
        rec["market_indexes"][0]["symbol"] == "SPY" and rec["market_indexes"][0]["change"] == -6.73
    )


def test_trending_rows_rejected_one_by_one() -> None:
    raw = {
        "page": 2,
        "has_more": False,
        "trending_symbols": [{"symbol": "A", "price": "1.5"}, {"rank": 2}, "x"],
    }
    page = parse.trending_page(raw, snapshot_ms=5)
    assert [p.key for p in page.items] == ["A"] and page.items[0].record["price"] == 1.5
    assert [r.error.reason for r in page.rejected] == [Reason.INVALID_RECORD] * 2
    assert json.loads(page.rejected[0].raw) == {"rank": 2}
    with pytest.raises(ParseError):
        parse.trending_page({"data": {"page": 1}}, snapshot_ms=5)


# --- sentiment chart -------------------------------------------------------------------------


def test_sample_chart() -> None:
    sample = seed_sample("sentiment-chart-api-v2.txt", "Sample Response")
    page = parse.chart_points(json.dumps(sample), symbol="AAPL", zoom="1D", fetched_at_ms=9)
    assert page.rejected == []
    assert [p.key for p in page.items] == ["AAPL|1D|1745933400000", "AAPL|1D|1745933700000"]
    for spec, _, rec in page.items:
        assert spec is SENTIMENT_CHART
        assert_valid(spec, rec)
    rec = page.items[0].record
    assert (rec["message_volume_normalized"], rec["message_volume_label"]) == (31.0, "LOW")
    assert (rec["sentiment_normalized"], rec["sentiment_label"]) == (65.0, "BULLISH")


def test_chart_bad_points_and_order() -> None:
    raw = {
        "data": {
            "2025-04-29T13:35:00Z": {},
            "2025-04-29T13:30:00Z": {"sentimentNormalized": 5},
            "bad": {"dateTime": "never"},
            "x": 3,
        }
    }
    page = parse.chart_points(raw, symbol="A", zoom="1W", fetched_at_ms=0)
    assert [p.record["time_ms"] for p in page.items] == [1745933400000, 1745933700000]
    assert len(page.rejected) == 2
    for bad in (b"{}", b'{"data": []}', b"nope"):
        with pytest.raises(ParseError):
            parse.chart_points(bad, symbol="A", zoom="1D", fetched_at_ms=0)


# --- REST API v2 streams ---------------------------------------------------------------------


@pytest.mark.parametrize("name, response", list(rest_seed_responses()))
def test_rest_seed_responses(name: str, response: Any) -> None:
    page = parse.rest_stream(json.dumps(response))
    assert page.rejected == []
    assert len(page.items) == len(response["messages"]) > 0
    cur = response["cursor"]
    assert page.cursor == parse.Cursor(cur["since"], cur["max"], cur["more"])
    for spec, key, rec in page.items:
        assert spec is MESSAGES and key == str(rec["message_id"])
        assert rec["origin"] == "rest" and rec["seq_id"] is None
        assert rec["event_time_ms"] == rec["message"]["created_at_ms"]
        assert_valid(spec, rec)


def test_real_files_present() -> None:
    assert len(REAL_FILES) == 45 + 10, REAL_FILES


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_real_responses_parse_completely(path: Path) -> None:
    raw = path.read_bytes()
    decoded = json.loads(raw)
    messages = decoded if isinstance(decoded, list) else decoded["messages"]
    page = parse.rest_stream(raw, origin="replay")
    assert page.rejected == []
    assert [p.record["message_id"] for p in page.items] == [m["id"] for m in messages]
    for (spec, _, rec), src in zip(page.items, messages, strict=True):
        assert_valid(spec, rec)
        msg = rec["message"]
        assert msg["body"] == src["body"] and msg["user"]["id"] == src["user"]["id"]
        assert [s["symbol"] for s in msg["symbols"]] == [s["symbol"] for s in src["symbols"]]
        basic = (src["entities"].get("sentiment") or {}).get("basic")
        assert msg["sentiment"] == basic
    if isinstance(decoded, dict):
        cur = decoded["cursor"]
        assert page.cursor == parse.Cursor(cur["since"], cur["max"], cur["more"])


def test_real_eth_overlap_has_74_unique_messages() -> None:
    ids = {
        p.key
        for f in REAL_FILES
        if "api_json" in str(f)
        for p in parse.rest_stream(f.read_bytes()).items
    }
    assert len(ids) == 74


def test_rest_page_rejects_only_bad_messages() -> None:
    good = SAMPLE_MESSAGE
    page = parse.rest_stream({"messages": [good, {"id": 2}, {**good, "id": 3}], "cursor": None})
    assert [p.key for p in page.items] == ["5556662", "3"]
    assert [r.error.reason for r in page.rejected] == [Reason.INVALID_RECORD]
    assert page.cursor == parse.Cursor(None, None, False)
    for bad in (b'{"cursor": {}}', b"42", b"{"):
        with pytest.raises(ParseError):
            parse.rest_stream(bad)


# --- history CSV -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tags",
    [
        ("$AAPL up, $tsla down, $AAPL again", ["AAPL", "TSLA"]),
        ("$ETH.X and $BTC.X", ["ETH.X", "BTC.X"]),
        ("costs $5 and $12.50", []),
        ("no tags", []),
    ],
)
def test_cashtags(text: str, tags: list[str]) -> None:
    assert parse.cashtags(text) == tags


def test_history_row_with_and_without_message_id() -> None:
    row = {
        "created_at": "2022-07-20T21:46:57Z",
        "user_name": "Barbaend",
        "user_id": "6755135",
        "bear_bull_tag": "Bullish",
        "text": "$A Tilray looks good",
        "message_id": "472907164",
    }
    spec, key, rec = parse.history_row(row)
    assert (spec, key, rec["origin"], rec["event_time_ms"]) == (
        MESSAGES,
        "472907164",
        "replay",
        1658353617000,
    )
    assert_valid(spec, rec)
    assert (
        rec["message"]["sentiment"] == "Bullish" and rec["message"]["symbols"][0]["symbol"] == "A"
    )
    no_id = {**row, "message_id": None, "bear_bull_tag": "NIL", "text": "Yikes danger zone"}
    a, b = parse.history_row(no_id, default_symbol="BTC.X"), parse.history_row(no_id)
    assert a.key == b.key and int(a.key) >= parse.SYNTHETIC_ID_BASE  # stable, never a real id
    assert a.record["message"]["sentiment"] is None
    assert [s["symbol"] for s in a.record["message"]["symbols"]] == ["BTC.X"]
    assert_valid(MESSAGES, a.record)


def test_history_row_bilardi_collection_columns() -> None:
    row = {
        "id": "516996986",
        "body": "monday easy",
        "created_at": "2023-03-12T17:21:40Z",
        "sentiment": "Bullish",
        "likes": "1.0",
        "user_id": "7565455",
    }
    rec = parse.history_row(row, default_symbol="TSLA").record
    assert_valid(MESSAGES, rec)
    assert (
        rec["message_id"],
        rec["message"]["likes_count"],
        rec["message"]["user"]["username"],
    ) == (516996986, 1, "user7565455")


@pytest.mark.parametrize(
    "change",
    [
        {"created_at": "x"},
        {"user_id": ""},
        {"user_id": None},
        {"text": None},
        {"message_id": "abc"},
    ],
)
def test_history_row_rejects(change: dict[str, Any]) -> None:
    row = {
        "created_at": "2022-07-20T21:46:57Z",
        "user_name": "u",
        "user_id": "1",
        "text": "t",
        **change,
    }
    with pytest.raises(ParseError):
        parse.history_row(row)


@pytest.mark.parametrize("path", sorted(HISTORY.glob("*.csv*")), ids=lambda p: p.name)
def test_real_history_files_parse(path: Path) -> None:
    import csv
    import gzip
    import io

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:  # type: ignore[operator]
        rows = list(csv.DictReader(io.StringIO(f.read())))
    symbol = path.name.split("_")[0].split(".")[0]
    parsed = [parse.history_row(r, default_symbol=symbol) for r in rows]
    assert len(parsed) == len(rows) > 0
    for item in parsed[:: max(1, len(parsed) // 50)]:
        assert_valid(MESSAGES, item.record)

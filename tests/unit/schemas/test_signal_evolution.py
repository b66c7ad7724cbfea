"""Signal quality v2 grew pulse.spikes and pulse.sentiment: BACKWARD-compatible additions only."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from pulse.schemas.serde import load_schema

# what v2 added; dropping them must give back the v1 contract readers already know
ADDED = {
    "spike.avsc": ["kind", "distinct_users", "scored", "scored_count", "span_ms"],
    "window_sentiment.avsc": [
        "user_bullish",
        "user_bearish",
        "user_bullish_ratio",
        "user_bullish_ratio_low",
        "user_bullish_ratio_high",
        "baseline_warm",
    ],
}
V1_SPIKE = {
    "symbol": "AAL",
    "window_start_ms": 0,
    "window_end_ms": 300_000,
    "window_size_ms": 300_000,
    "count": 14,
    "expected_count": 0.2,
    "score": 9.1,
    "p_value": 1e-12,
    "ratio": 70.0,
    "bullish_ratio": 0.5,
    "sample_message_ids": [1, 2],
    "severity": "HIGH",
    "detected_at_ms": 5,
}
V1_SENTIMENT = {
    "symbol": "AAL",
    "window_start_ms": 0,
    "window_end_ms": 60_000,
    "window_size_ms": 60_000,
    "window_advance_ms": 60_000,
    "bullish": 3,
    "bearish": 1,
    "bullish_ratio": 0.75,
    "bullish_ratio_low": 0.3,
    "bullish_ratio_high": 0.95,
    "sentiment_score_mean": None,
    "sentiment_score_count": 0,
    "revision": 0,
    "emitted_at_ms": 0,
}


def _v1(schema_file: str) -> dict[str, Any]:
    schema = load_schema(schema_file)
    added = ADDED[schema_file]
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] not in added]}


def _write(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


def _read(data: bytes, writer: dict[str, Any], reader: dict[str, Any]) -> dict[str, Any]:
    return fastavro.schemaless_reader(
        io.BytesIO(data), fastavro.parse_schema(writer), fastavro.parse_schema(reader)
    )


@pytest.mark.parametrize("schema_file", sorted(ADDED))
def test_additions_come_last_and_all_have_defaults(schema_file: str) -> None:
    fields = load_schema(schema_file)["fields"]
    added = fields[-len(ADDED[schema_file]) :]
    assert [f["name"] for f in added] == ADDED[schema_file]
    assert all("default" in f for f in added)


@pytest.mark.parametrize(
    "schema_file, record, defaults",
    [
        (
            "spike.avsc",
            V1_SPIKE,
            {
                "kind": "BURST",
                "scored": "MESSAGES",
                "span_ms": None,
                "scored_count": None,
                "distinct_users": None,
            },
        ),
        (
            "window_sentiment.avsc",
            V1_SENTIMENT,
            {"user_bullish": 0, "user_bearish": 0, "user_bullish_ratio": None},
        ),
    ],
)
def test_new_reader_reads_old_records_with_defaults(
    schema_file: str, record: dict[str, Any], defaults: dict[str, Any]
) -> None:
    """BACKWARD: a consumer on the new schema reads what the old writers wrote."""
    old, new = _v1(schema_file), load_schema(schema_file)
    decoded = _read(_write(old, record), old, new)
    assert {k: decoded[k] for k in record} == record
    assert {k: decoded[k] for k in defaults} == defaults


def test_new_spike_round_trips_every_field() -> None:
    schema = load_schema("spike.avsc")
    record = {
        **V1_SPIKE,
        "kind": "SURGE",
        "distinct_users": 11,
        "scored": "USERS",
        "scored_count": 40.0,
        "span_ms": 10_800_000,
    }
    assert _read(_write(schema, record), schema, schema) == record

"""The Avro contracts and topic specs, checked without a broker."""

from __future__ import annotations

import json
from typing import Any

import fastavro
import pytest

from pulse.schemas import topics
from pulse.schemas.serde import SCHEMA_DIR, load_schema


def _unions_with_null(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for f in node.get("fields", []):
            t = f["type"]
            if isinstance(t, list) and "null" in t:
                found.append((f"{path}.{f['name']}", f))
            found += _unions_with_null(t, f"{path}.{f['name']}")
        for key in ("items", "values", "type"):
            if isinstance(node.get(key), dict | list):
                found += _unions_with_null(node[key], path)
    elif isinstance(node, list):
        for item in node:
            found += _unions_with_null(item, path)
    return found


@pytest.mark.parametrize("spec", topics.ALL, ids=lambda s: s.name)
def test_every_topic_schema_is_valid_and_self_contained(spec: topics.TopicSpec) -> None:
    schema = load_schema(spec.schema_file)
    parsed = fastavro.parse_schema(schema)  # raises on an unknown or malformed type
    assert parsed["type"] == "record"
    assert schema["namespace"].startswith("io.stocktwitspulse.")
    assert schema.get("doc"), f"{spec.schema_file} has no doc"


@pytest.mark.parametrize("spec", topics.ALL, ids=lambda s: s.name)
def test_optional_fields_default_to_null_so_schemas_can_evolve(spec: topics.TopicSpec) -> None:
    for path, field in _unions_with_null(load_schema(spec.schema_file)):
        if field["type"][0] == "null":
            assert "default" in field and field["default"] is None, path


def test_every_avsc_file_belongs_to_a_topic_or_is_shared() -> None:
    used = {spec.schema_file for spec in topics.ALL}
    files = {p.name for p in SCHEMA_DIR.glob("*.avsc")}
    # types named by other schemas: SymbolRef (raw), Mention (late events; MentionKind in
    # mention batches)
    assert files - used == {"common.avsc", "mention.avsc"}
    assert used <= files


def test_shared_types_are_inlined_once_per_schema() -> None:
    text = json.dumps(load_schema("sentiment_event.avsc"))
    assert text.count('"name": "SymbolRef"') == 1


def test_topic_names_are_unique_and_compaction_is_where_the_key_is_an_entity() -> None:
    names = [s.name for s in topics.ALL]
    assert len(names) == len(set(names))
    compacted = {s.name for s in topics.ALL if s.config.get("cleanup.policy") == "compact"}
    assert {"stocktwits.trending", "stocktwits.sentiment-chart"} <= compacted
    for spec in topics.ALL:
        if spec.name not in compacted:
            assert spec.config["cleanup.policy"] == "delete" and spec.config["retention.ms"]


def test_round_trip_through_fastavro_keeps_every_field() -> None:
    schema = fastavro.parse_schema(load_schema("spike.avsc"))
    record = {
        "symbol": "AAPL",
        "window_start_ms": 0,
        "window_end_ms": 60_000,
        "window_size_ms": 60_000,
        "count": 50,
        "expected_count": 5.5,
        "score": 7.1,
        "p_value": 1e-9,
        "ratio": 9.09,
        "bullish_ratio": None,
        "sample_message_ids": [1, 2, 3],
        "severity": "HIGH",
        "detected_at_ms": 123,
        "kind": "BURST",
        "distinct_users": 40,
        "scored": "USERS",
        "scored_count": 40,
        "span_ms": 60_000,
    }
    import io

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    assert fastavro.schemaless_reader(buf, schema) == record

"""schemas.avro_writer and Serde's wire encoder: fastavro's bytes, or fastavro decides."""

from __future__ import annotations

import io
import itertools
import struct
from typing import Any

import fastavro
import pytest

from pulse.producers import parse
from pulse.producers.synthetic import Config, Generator, envelopes
from pulse.schemas import deadletter, topics
from pulse.schemas.avro_writer import Mismatch, compile_writer, varint
from pulse.schemas.deadletter import Reason
from pulse.schemas.serde import load_schema, wire_encoder
from pulse.schemas.topics import CHECKPOINTS, DEAD_LETTER, MESSAGES, RAW_SENTIMENT, TRENDING
from tests.unit.producers.test_parse import SAMPLE_MESSAGE, envelope


def fastavro_bytes(spec: topics.TopicSpec, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(load_schema(spec.schema_file)), record)
    return out.getvalue()


SENTIMENT_EVENT = parse.sentiment_event(
    {"message_id": 1, "created_at": 0, "sentiment_score": 0.5, "symbols": [{"symbol": "A"}]}
).record
RECORDS: list[tuple[topics.TopicSpec, dict[str, Any]]] = [
    (MESSAGES, parse.firehose_event(envelope("Message", SAMPLE_MESSAGE)).record),
    (MESSAGES, parse.firehose_event(envelope("Message", {"id": 1}, action="destroy")).record),
    *[
        (p.spec, p.record)
        for p in map(
            parse.firehose_event, itertools.islice(envelopes(iter(Generator(Config(), 0))), 300)
        )
    ],
    *[
        (p.spec, p.record)
        for p in (
            parse.firehose_event(envelope("LikeMessage", {"id": 1, "message_id": 2, "user_id": 3})),
            parse.firehose_event(
                envelope("Friendship", {"id": 4, "user_id": 5, "following_user_id": 6})
            ),
            parse.firehose_event(
                envelope("Block", {"id": 7, "user_id": 8, "blocked_user_id": 9, "muted": True})
            ),
        )
    ],
    (RAW_SENTIMENT, SENTIMENT_EVENT),
    (
        TRENDING,
        parse.trending_page(
            {
                "trending_symbols": [{"symbol": "A", "price": "1,234.5", "rank": 3}],
                "market_indexes": [{"symbol": "SPX", "volume": -5}],
            },
            snapshot_ms=1,
        )
        .items[0]
        .record,
    ),
    (
        DEAD_LETTER,
        deadletter.dead_letter(
            b"\xff" * 300, source="s", stage="parse", reason=Reason.INVALID_JSON, error="é" * 70
        ),
    ),
    (
        CHECKPOINTS,
        {"stream": "stream", "seq_id": "1" * 56, "produced_at_ms": -1, "written_at_ms": 0},
    ),
]


def test_records_cover_every_raw_topic() -> None:
    assert {spec.name for spec, _ in RECORDS} >= {
        "stocktwits.messages",
        "stocktwits.likes",
        "stocktwits.social",
        "stocktwits.sentiment",
        "stocktwits.trending",
    }


@pytest.mark.parametrize("spec, record", RECORDS)
def test_compiled_writer_writes_fastavros_bytes(spec: topics.TopicSpec, record: Any) -> None:
    assert compile_writer(load_schema(spec.schema_file))(record) == fastavro_bytes(spec, record)


@pytest.mark.parametrize("spec", topics.ALL, ids=lambda s: s.name)
def test_every_topic_schema_compiles(spec: topics.TopicSpec) -> None:
    compile_writer(load_schema(spec.schema_file))


@pytest.mark.parametrize(
    "n, encoded", [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")]
)
def test_varint(n: int, encoded: bytes) -> None:
    assert varint(n) == encoded


@pytest.mark.parametrize(
    "value", [0, -1, 1, 63, -64, 64, (1 << 31) - 1, -(1 << 31), (1 << 63) - 1, -(1 << 63)]
)
def test_long_edges(value: int) -> None:
    record = {"stream": "s", "seq_id": "", "produced_at_ms": value, "written_at_ms": 0}
    assert compile_writer(load_schema(CHECKPOINTS.schema_file))(record) == fastavro_bytes(
        CHECKPOINTS, record
    )


def _checkpoint(**change: Any) -> dict[str, Any]:
    return {"stream": "s", "seq_id": "1", "produced_at_ms": 1, "written_at_ms": 2, **change}


@pytest.mark.parametrize(
    "record",
    [
        _checkpoint(produced_at_ms=True),  # bool is not a long
        _checkpoint(produced_at_ms=1.0),  # fastavro's coercion, not ours
        _checkpoint(produced_at_ms=1 << 63),  # out of range
        _checkpoint(seq_id=b"1"),
        {"stream": "s", "seq_id": "1", "produced_at_ms": 1},  # missing field
    ],
)
def test_compiled_writer_declines_what_it_does_not_own(record: dict[str, Any]) -> None:
    with pytest.raises((Mismatch, KeyError)):
        compile_writer(load_schema(CHECKPOINTS.schema_file))(record)


def test_wire_encoder_frames_with_magic_byte_and_schema_id() -> None:
    spec, record = RECORDS[0]
    encoded = wire_encoder(4242, load_schema(spec.schema_file))(record)
    assert encoded[:5] == b"\x00" + struct.pack(">I", 4242)
    assert encoded[5:] == fastavro_bytes(spec, record)


def test_wire_encoder_leaves_coercions_and_errors_to_fastavro() -> None:
    encode = wire_encoder(7, load_schema(RAW_SENTIMENT.schema_file))
    record = dict(SENTIMENT_EVENT, sentiment_score=1)  # int for a double: fastavro's coercion
    assert encode(record)[5:] == fastavro_bytes(RAW_SENTIMENT, record)
    with pytest.raises((TypeError, ValueError)):
        encode(dict(record, message_id="x"))  # fastavro's own error


@pytest.mark.parametrize("value", [-(1 << 63) - 1, 1 << 63, 1 << 64, -(1 << 64), 1 << 100])
def test_long_out_of_range_is_declined(value: int) -> None:
    with pytest.raises(Mismatch):
        compile_writer(load_schema(CHECKPOINTS.schema_file))(_checkpoint(produced_at_ms=value))


def test_longs_of_every_varint_length() -> None:
    write = compile_writer(load_schema(CHECKPOINTS.schema_file))
    for bits in range(64):
        for value in {(1 << bits) - 1, 1 << bits, (1 << bits) + 12345}:
            for signed in (value, -value, -value - 1):
                if -(1 << 63) <= signed < 1 << 63:
                    record = _checkpoint(produced_at_ms=signed)
                    assert write(record) == fastavro_bytes(CHECKPOINTS, record), signed


INT_SCHEMA = {"type": "record", "name": "I", "fields": [{"name": "i", "type": "int"}]}


def _fastavro(schema: dict[str, Any], record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


@pytest.mark.parametrize(
    "value", [0, -1, (1 << 31) - 1, -(1 << 31), 1 << 31, -(1 << 31) - 1, 1 << 40]
)
def test_int_range(value: int) -> None:
    write = compile_writer(INT_SCHEMA)
    if -(1 << 31) <= value < 1 << 31:
        assert write({"i": value}) == _fastavro(INT_SCHEMA, {"i": value})
    else:
        with pytest.raises(Mismatch):
            write({"i": value})


def test_recursive_and_reused_named_records() -> None:
    schema = {
        "type": "record",
        "name": "Pair",
        "namespace": "t",
        "fields": [
            {
                "name": "a",
                "type": {
                    "type": "record",
                    "name": "Node",
                    "fields": [
                        {"name": "v", "type": "long"},
                        {"name": "next", "type": ["null", "Node"]},
                    ],
                },
            },
            {"name": "b", "type": "Node"},
            {"name": "c", "type": {"type": "array", "items": "t.Node"}},
        ],
    }
    node = {"v": 1, "next": {"v": -2, "next": {"v": 1 << 40, "next": None}}}
    record = {"a": node, "b": {"v": 3, "next": node}, "c": [node, {"v": 0, "next": None}]}
    assert compile_writer(schema)(record) == _fastavro(schema, record)


def test_prefix_and_fallback() -> None:
    write = compile_writer(INT_SCHEMA, prefix=b"\x00\x01", fallback=lambda r: b"fallback")
    assert write({"i": 1}) == b"\x00\x01\x02"
    assert write({"i": True}) == write({}) == write({"i": 1 << 40}) == b"fallback"

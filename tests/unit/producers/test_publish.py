"""producers.publish.union_tagger: names union branches without changing the Avro bytes."""

from __future__ import annotations

import io
import itertools
from typing import Any

import fastavro
import pytest

from producers import parse
from producers.publish import union_tagger
from producers.synthetic import Config, Generator, envelopes
from schemas.serde import load_schema
from schemas.topics import CHECKPOINTS, DEAD_LETTER, MESSAGES, SENTIMENT_EVENTS, TRENDING
from tests.unit.producers.test_parse import SAMPLE_MESSAGE, envelope


def encode(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


RECORDS = [
    (MESSAGES, parse.firehose_event(envelope("Message", SAMPLE_MESSAGE)).record),
    (MESSAGES, parse.firehose_event(envelope("Message", {"id": 1}, action="destroy")).record),
    *[
        (MESSAGES, parse.firehose_event(line).record)
        for line in itertools.islice(envelopes(iter(Generator(Config(), 0))), 20)
    ],
    (
        SENTIMENT_EVENTS,
        parse.sentiment_event({"message_id": 1, "created_at": 0, "sentiment_score": 0.5}).record,
    ),
    (
        TRENDING,
        parse.trending_page({"trending_symbols": [{"symbol": "A"}]}, snapshot_ms=1).items[0].record,
    ),
]


@pytest.mark.parametrize("spec, record", RECORDS)
def test_tagged_record_encodes_to_the_same_bytes(spec: Any, record: dict[str, Any]) -> None:
    schema = fastavro.parse_schema(load_schema(spec.schema_file))
    tagged = union_tagger(load_schema(spec.schema_file))(record)
    assert encode(schema, tagged) == encode(schema, record)


def test_tagger_marks_nested_record_branches_and_leaves_the_input_alone() -> None:
    record = RECORDS[0][1]
    tagged = union_tagger(load_schema(MESSAGES.schema_file))(record)
    name, message = tagged["message"]
    assert name == "io.stocktwitspulse.raw.Message"
    assert message["source"][0] == "io.stocktwitspulse.raw.Source"
    assert message["conversation"][0] == "io.stocktwitspulse.raw.Conversation"
    assert isinstance(record["message"], dict)  # the parsed record is not mutated


@pytest.mark.parametrize("spec", [DEAD_LETTER, CHECKPOINTS, TRENDING])
def test_tagger_is_identity_without_record_unions(spec: Any) -> None:
    record = {"a": 1}
    assert union_tagger(load_schema(spec.schema_file))(record) is record

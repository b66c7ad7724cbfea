"""Every seed sample and every real captured message: parse → registry Avro → Kafka → equal."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pulse.producers import parse
from pulse.producers.publish import Publisher
from pulse.producers.roundtrip import load_file, roundtrip
from pulse.producers.synthetic import Config, Generator, envelopes
from pulse.schemas import deadletter
from pulse.schemas.deadletter import Reason
from pulse.schemas.serde import Serde, schema_str
from pulse.schemas.topics import DEAD_LETTER
from pulse.settings import Settings
from tests.support.data import API_JSON, COLLECTOR, SEEDS
from tests.unit.producers.test_parse import clean_json, envelope, rest_seed_responses, seed_sample

pytestmark = pytest.mark.integration

REAL_FILES = sorted(API_JSON.glob("*.json")) + sorted(COLLECTOR.glob("*.json"))


def _seed_items() -> list[parse.Parsed]:
    items = []
    message = seed_sample("firehose-stream.txt", "StockTwits Post Activity")
    for action in ("create", "destroy"):
        items.append(parse.firehose_event(envelope("Message", message, action=action)))
    text = (SEEDS / "firehose-stream.txt").read_text()
    for obj, marker in (("LikeMessage", "LikeMessage Data Format"),
                        ("Friendship", "Friendship Data Format"),
                        ("Block", "Block Data Format")):  # fmt: skip
        at = text.index('{\n  "id"', text.index(marker))
        sample = clean_json(text[at : text.index("\n}", at) + 2])
        items.append(parse.firehose_event(envelope(obj, sample)))
    items.append(
        parse.sentiment_event(seed_sample("firehose-sentiment-stream.txt", "Sample Payload"))
    )
    trending = seed_sample("trending-symbols-api.txt", '"sample"')
    items += parse.trending_page(trending, snapshot_ms=1_763_000_000_000).items
    chart = seed_sample("sentiment-chart-api-v2.txt", "Sample Response")
    items += parse.chart_points(
        chart, symbol="AAPL", zoom="1D", fetched_at_ms=1_745_934_000_000
    ).items
    for _, response in rest_seed_responses():
        items += parse.rest_stream(json.dumps(response)).items
    return items


def test_every_seed_sample_payload_survives_the_round_trip(settings: Settings) -> None:
    items = _seed_items()
    kinds = {p.spec.name for p in items}
    assert kinds == {
        "stocktwits.messages",
        "stocktwits.likes",
        "stocktwits.social",
        "stocktwits.sentiment",
        "stocktwits.trending",
        "stocktwits.sentiment-chart",
    }
    result = roundtrip(settings, items)
    assert result.sent == len(items) and result.ok, result


def test_every_real_captured_message_survives_the_round_trip(settings: Settings) -> None:
    assert len(REAL_FILES) == 55
    items: list[parse.Parsed] = []
    for path in REAL_FILES:
        got, rejected = load_file(Path(path))
        assert rejected == [], rejected
        items += got
    assert len(items) > 74 * 2  # overlapping ETH.X pages: duplicates travel too, in order
    result = roundtrip(settings, items)
    assert result.ok, result.mismatched[:5]
    assert result.received == len(items)


def test_our_encoders_write_the_bytes_of_confluents_avro_serializer(
    settings: Settings, serde: Serde
) -> None:
    """Serde.serializer frames fastavro itself, and Publisher tags union branches on top:
    both must stay byte for byte what confluent-kafka's AvroSerializer writes."""
    items = _seed_items()
    for path in REAL_FILES:
        items += load_file(Path(path))[0]
    synthetic = envelopes(iter(Generator(Config(), 1_656_460_800_000)))
    items += [parse.firehose_event(line) for line in itertools.islice(synthetic, 2_000)]
    dead = deadletter.dead_letter(
        b"\xff{", source="test", stage="parse", reason=Reason.INVALID_JSON, error="x"
    )
    items.append(parse.Parsed(DEAD_LETTER, "test", dead))
    publisher = Publisher(settings, "test", serde=serde)
    reference: dict[str, AvroSerializer] = {}
    for spec, _, record in items:
        topic = spec.full_name(settings)
        if topic not in reference:
            serde.register(spec)
            reference[topic] = AvroSerializer(
                serde.client,
                schema_str(spec),
                conf={"auto.register.schemas": False, "use.latest.version": False},
            )
        expected = reference[topic](record, SerializationContext(topic, MessageField.VALUE))
        assert serde.serializer(spec)(record) == expected, (spec.name, record)
        assert publisher.encoder(spec)(record) == expected, (spec.name, record)
    assert len(reference) == 7


def test_malformed_json_raises_the_typed_error() -> None:
    truncated = b'{"object": "Message", "action": "create", "data": {"id": 1,'
    mistyped = b'{"object": "Message", "action": "create", "data": {"id": "x"}}'
    for raw in (truncated, b"\xff\xfe", b"[]", mistyped):
        with pytest.raises(parse.ParseError) as err:
            parse.firehose_event(raw)
        assert err.value.reason.value in {"invalid_json", "invalid_record"}

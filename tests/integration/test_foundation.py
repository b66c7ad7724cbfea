"""The foundation against the real broker and registry: topics, transactions, compaction,
schema registration and compatibility."""

from __future__ import annotations

import io
import json
import struct
import time
import uuid

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from pulse.schemas import topics
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde, schema_str
from pulse.settings import Settings
from tests.conftest import consume, create_topic

pytestmark = pytest.mark.integration


def test_every_topic_is_created_with_its_partitions_and_configs(settings: Settings) -> None:
    created = ensure_topics(settings)
    assert len(created) == len(topics.ALL)
    assert ensure_topics(settings) == []  # idempotent
    admin = AdminClient(settings.kafka_config())
    md = admin.list_topics(timeout=10)
    for spec in topics.ALL:
        name = spec.full_name(settings)
        assert len(md.topics[name].partitions) == spec.partitions(settings)
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        config = admin.describe_configs([resource])[resource].result(timeout=10)
        for key, value in spec.config.items():
            assert config[key].value == value, (name, key)


def test_transactional_writes_are_seen_by_read_committed_only_when_committed(
    settings: Settings,
) -> None:
    topic = settings.topic("tx")
    create_topic(settings, topic)
    producer = Producer({**settings.kafka_config(), "transactional.id": f"tx-{uuid.uuid4()}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.flush()
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed-1")
    producer.produce(topic, b"committed-2")
    producer.commit_transaction(30)

    committed = consume(
        settings, topic, 3, timeout_s=8, extra={"isolation.level": "read_committed"}
    )
    assert [m.value() for m in committed] == [b"committed-1", b"committed-2"]
    raw = consume(settings, topic, 3, timeout_s=15, extra={"isolation.level": "read_uncommitted"})
    assert b"aborted" in [m.value() for m in raw]


def test_a_compacted_topic_keeps_only_the_latest_value_per_key(settings: Settings) -> None:
    topic = settings.topic("compacted")
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.001",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": "100",
    }
    create_topic(settings, topic, config=config)
    producer = Producer(settings.kafka_config())
    for version in range(20):
        for key in ("AAPL", "TSLA", "GME"):
            producer.produce(topic, f"{key}-{version}".encode(), key.encode())
    producer.flush()

    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.5)
        producer.produce(topic, b"roll", b"ROLL")  # a new record rolls the old segment
        producer.flush()
        consumer = Consumer({**settings.kafka_config(), "group.id": uuid.uuid4().hex})
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.close()
        values = [m.value() for m in consume(settings, topic, 100, timeout_s=3)]
        stocks = [v for v in values if v != b"roll"]
        if stocks == [b"AAPL-19", b"TSLA-19", b"GME-19"]:
            break
        assert time.monotonic() < deadline, f"not compacted after 60 s: {stocks[:6]}… low={low}"


def test_schemas_register_under_topic_name_subjects_with_backward_compatibility(
    settings: Settings,
) -> None:
    serde = Serde(settings)
    for spec in topics.ALL:
        schema_id = serde.register(spec)
        subject = spec.value_subject(settings)
        assert subject == f"{settings.topic_prefix}{spec.name}-value"
        assert serde.client.get_compatibility(subject) == "BACKWARD"
        assert serde.client.get_latest_version(subject).schema_id == schema_id
        assert serde.register(spec) == schema_id  # registering again is a no-op


def test_a_backward_incompatible_change_is_rejected_and_a_compatible_one_accepted(
    settings: Settings,
) -> None:
    import json

    serde = Serde(settings)
    spec = topics.SPIKES
    serde.register(spec)
    subject = spec.value_subject(settings)
    schema = json.loads(schema_str(spec))

    breaking = dict(schema, fields=[*schema["fields"], {"name": "venue", "type": "string"}])
    with pytest.raises(SchemaRegistryError) as err:
        serde.client.register_schema(subject, Schema(json.dumps(breaking), "AVRO"))
    assert err.value.http_status_code == 409

    optional = {"name": "venue", "type": ["null", "string"], "default": None}
    evolved = dict(schema, fields=[*schema["fields"], optional])
    serde.client.register_schema(subject, Schema(json.dumps(evolved), "AVRO"))
    assert len(serde.client.get_versions(subject)) == 2


def test_values_travel_in_the_confluent_wire_format(settings: Settings, producer: Producer) -> None:
    serde = Serde(settings)
    spec = topics.SENTIMENT_CHART
    ensure_topics(settings, [spec])
    point = {"symbol": "AAPL", "zoom": "1D", "time_ms": 1745933400000,
             "message_volume_normalized": 31.0, "message_volume_label": "LOW",
             "sentiment_normalized": 65.0, "sentiment_label": "BULLISH",
             "fetched_at_ms": 1745933460000}  # fmt: skip
    producer.produce(spec.full_name(settings), serde.encode(spec, point), b"AAPL")
    producer.flush()
    [msg] = consume(settings, spec.full_name(settings), 1)
    value = msg.value()
    assert value[0] == 0  # magic byte
    schema_id = int.from_bytes(value[1:5], "big")
    assert serde.client.get_schema(schema_id).schema_type == "AVRO"
    assert serde.decode(spec, value) == point


def test_decoding_needs_no_registry_call_beyond_the_writer_schema(
    settings: Settings, producer: Producer
) -> None:
    """The client's default subject strategy first asks for "associations" (not served by
    Apicurio; once hung a CI run). Our subjects are TopicNameStrategy, so it must never ask."""
    writer = Serde(settings)
    spec = topics.SENTIMENT_CHART
    point = {"symbol": "TSLA", "zoom": "1W", "time_ms": 1, "fetched_at_ms": 2}
    data = writer.encode(spec, point)

    reader = Serde(settings)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("asked the registry for associations")

    reader.client.get_associations_by_resource_name = refuse  # type: ignore[method-assign]
    assert reader.decode(spec, data)["symbol"] == "TSLA"


def test_a_record_of_an_older_schema_version_decodes_to_todays_shape(
    settings: Settings,
) -> None:
    """Readers resolve the writer schema named by the frame's id against ours: fields added
    since (with defaults) appear, so old records on a topic stay readable."""
    serde = Serde(settings)
    spec = topics.SENTIMENT_CHART
    today = json.loads(schema_str(spec))
    old = dict(
        today,
        fields=[
            f
            for f in today["fields"]
            if f["name"] not in ("sentiment_label", "message_volume_label")
        ],
    )
    old_id = serde.client.register_schema(
        f"old-{uuid.uuid4().hex}", Schema(json.dumps(old), "AVRO")
    )
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        fastavro.parse_schema(old),
        {
            "symbol": "AAPL",
            "zoom": "1D",
            "time_ms": 5,
            "message_volume_normalized": 1.5,
            "sentiment_normalized": None,
            "fetched_at_ms": 6,
        },
    )
    data = struct.pack(">bI", 0, old_id) + body.getvalue()
    assert serde.decode(spec, data) == {
        "symbol": "AAPL",
        "zoom": "1D",
        "time_ms": 5,
        "message_volume_normalized": 1.5,
        "message_volume_label": None,
        "sentiment_normalized": None,
        "sentiment_label": None,
        "fetched_at_ms": 6,
    }
    with pytest.raises(ValueError, match="not a Confluent Avro frame"):
        serde.decode(spec, b"\x01" + data[1:])
    with pytest.raises(Exception):  # noqa: B017 - fastavro's own error for a cut body
        serde.decode(spec, data[:8])

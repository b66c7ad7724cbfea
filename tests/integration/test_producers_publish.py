"""Publisher against the real broker: a record the broker refuses ends in the dead-letter topic."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from pulse.producers import parse
from pulse.producers.publish import Publisher
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde
from pulse.schemas.topics import DEAD_LETTER, MESSAGES
from pulse.settings import Settings
from tests.conftest import consume
from tests.unit.producers.test_parse import SAMPLE_MESSAGE, envelope

pytestmark = pytest.mark.integration


def test_broker_refusal_is_dead_lettered_and_settles_the_callback(settings: Settings) -> None:
    # a messages topic that accepts only tiny records: the broker refuses the sample message
    admin = AdminClient(settings.kafka_config())
    topic = NewTopic(
        MESSAGES.full_name(settings),
        num_partitions=1,
        replication_factor=1,
        config={"max.message.bytes": "200"},
    )
    admin.create_topics([topic])[topic.topic].result(30)
    ensure_topics(settings, (DEAD_LETTER,))
    publisher = Publisher(settings, "firehose", config={"compression.type": "none"})
    item = parse.firehose_event(envelope("Message", {**SAMPLE_MESSAGE, "body": "x" * 500}))
    settled: list[int] = []
    publisher.publish(
        item, headers=[("firehose.seq_id", b"42")], on_delivered=lambda: settled.append(1)
    )
    assert publisher.flush(60) == 0
    assert (publisher.failed, publisher.dead_lettered, settled) == (1, 1, [1])
    [letter] = consume(settings, DEAD_LETTER.full_name(settings), 1, timeout_s=20)
    record = Serde(settings).decode(DEAD_LETTER, letter.value())
    assert (record["reason"], record["stage"], record["source"]) == (
        "delivery_failed",
        "publish",
        "firehose",
    )
    assert record["source_topic"] == MESSAGES.full_name(settings)
    assert Serde(settings).decode(MESSAGES, record["raw"])["message_id"] == 5556662  # the bytes
    headers = dict(letter.headers())
    assert headers["dlq.reason"] == b"delivery_failed" and headers["firehose.seq_id"] == b"42"

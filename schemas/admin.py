"""Create the pipeline's topics on a cluster with the partitions and configs of schemas.topics."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import topics
from schemas.topics import TopicSpec
from settings import Settings

log = logging.getLogger(__name__)


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] = topics.ALL, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Idempotent."""
    admin = AdminClient(settings.kafka_config())
    new = [
        NewTopic(
            spec.full_name(settings),
            num_partitions=spec.partitions(settings),
            replication_factor=settings.replication_factor,
            config=dict(spec.config),
        )
        for spec in specs
    ]
    created = []
    for name, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created

"""Shared fixtures: one real Kafka broker + schema registry per test worker (pytest-xdist).

Where they come from, in order: ``KAFKA_BOOTSTRAP_SERVERS`` + ``SCHEMA_REGISTRY_URL`` from
the environment (shared by the workers: tests name their topics and groups uniquely); else a
Docker engine through testcontainers; else the local stack (Apache Kafka and Apicurio Registry
from Maven Central, see ``pulse/local/``), one per worker.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pulse.schemas.serde import Serde
from pulse.schemas.topics import TopicSpec
from pulse.settings import Settings


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no usable engine
        return False


@pytest.fixture(scope="session")
def stack_endpoints() -> Iterator[tuple[str, str]]:
    """(bootstrap servers, schema registry URL) of a running broker + registry."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    registry = os.environ.get("SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        yield bootstrap, registry
        return
    if _docker_answers():
        yield from _containers()
        return
    from pulse.local.stack import LocalStack

    home = Settings.from_env().local_home_path
    stack = LocalStack(home, name=f"test-{os.getpid()}")
    started = time.monotonic()
    try:
        endpoints = stack.up()
        print(f"\nembedded stack up in {time.monotonic() - started:.1f}s: {endpoints}")
        yield endpoints.bootstrap_servers, endpoints.schema_registry_url
    finally:
        stack.destroy()


def _containers() -> Iterator[tuple[str, str]]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer

    from pulse.local.stack import APICURIO_VERSION, KAFKA_VERSION

    with KafkaContainer(f"apache/kafka:{KAFKA_VERSION}").with_kraft() as kafka:
        registry = DockerContainer(f"apicurio/apicurio-registry:{APICURIO_VERSION}")
        registry.with_exposed_ports(8080)
        with registry:
            wait_for_logs(registry, "Listening on", timeout=120)
            url = (
                f"http://{registry.get_container_host_ip()}:"
                f"{registry.get_exposed_port(8080)}/apis/ccompat/v7"
            )
            yield kafka.get_bootstrap_server(), url


@pytest.fixture(scope="session")
def base_settings(stack_endpoints: tuple[str, str]) -> Settings:
    bootstrap, registry = stack_endpoints
    return Settings(bootstrap_servers=bootstrap, schema_registry_url=registry)


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """Settings with a topic prefix of this test's own, so tests never share topics."""
    return base_settings.replace(
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.", raw_partitions=3, symbol_partitions=3
    )


@pytest.fixture
def serde(settings: Settings) -> Serde:
    return Serde(settings)


@pytest.fixture
def producer(settings: Settings) -> Iterator[Producer]:
    p = Producer({**settings.kafka_config(), "enable.idempotence": True, "acks": "all"})
    yield p
    p.flush(30)


def consume(
    settings: Settings,
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    extra: dict[str, Any] | None = None,
) -> list[Any]:
    """Read ``expected`` records of ``topic`` from the beginning (fewer if time runs out)."""
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **(extra or {}),
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
    finally:
        consumer.close()
    return out


def records_in(settings: Settings, topic: str) -> int:
    """How many records were written to ``topic`` so far (the sum of its end offsets; not for
    transactional topics, whose commit markers take offsets too)."""
    consumer = Consumer({**settings.kafka_config(), "group.id": f"test-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def topic_of(spec: TopicSpec, settings: Settings) -> str:
    return spec.full_name(settings)


def create_topic(
    settings: Settings, name: str, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    """Create one ad-hoc topic (not one of schemas.topics) for a test."""
    admin = AdminClient(settings.kafka_config())
    future = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name]
    future.result(timeout=30)

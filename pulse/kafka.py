"""Every Kafka client of the pipeline, configured in one place from :class:`Settings`.

The ``*_config`` functions return plain dicts of librdkafka's dotted keys (as in
confluent-kafka-python's examples), so a test can assert them and a reader sees at a glance
what a client does. ``Settings.kafka_config()`` (bootstrap servers, TLS, SASL) is the base of
every one of them. The builders (:func:`producer`, :func:`consumer`, :func:`admin`) add what
is not configuration (an ``error_cb``, quiet logging) and construct the client::

    publisher = kafka.producer(kafka.producer_config(settings, batching=kafka.STREAM))
    viewer = kafka.consumer(kafka.reader_config(settings, "pulse-tail"), error_cb=on_error,
                            quiet=True)

Which client for what:

- :func:`producer_config`: every producer (idempotent, ``acks=all``, lz4), batched either as
  a long-lived :data:`STREAM` or as a stage that flushes at the end of each batch
  (:data:`FLUSHED`); :func:`transactional_producer_config` for exactly-once.
- :func:`group_consumer_config`: a member of a consumer group whose commits matter (the
  fan-out, ``pulse alerts``); :func:`faust_broker_options` gives faust's clients the same
  choices.
- :func:`reader_config`: a throwaway reader that never commits (viewers, read-backs, tests).
- :func:`offsets_reader_config`: asks where a group's commits stand without joining it.
- :func:`admin_config`: topics, configs, metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient

from pulse.settings import Settings

CLIENT_ID = "stocktwits-pulse"  # prefix of every client.id: brokers' logs and quotas name us
ErrorCb = Callable[[ck.KafkaError], None]
# Record headers as Producer.produce() takes them: a list, since a name may repeat
Headers = list[tuple[str, str | bytes | None]]

# librdkafka's syslog level that keeps only critical lines: for clients whose error_cb already
# reports each connection failure once (librdkafka would log it again, per broker, per retry)
QUIET_LOG_LEVEL = 2

# Group membership: a dead instance's partitions (or our own after a broker restart) move on
# in ~10 s instead of librdkafka's default 45 s (measured: a broker restart cost ~43 s of
# rejoin); a heartbeat every 3 s leaves three chances inside one session.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 3_000

# A transaction open longer than this is aborted by the broker (a hung instance cannot block
# read_committed readers for long); librdkafka wants delivery.timeout.ms at most this much.
TRANSACTION_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class Batching:
    """How a producer groups records into requests and how much it may hold unsent.

    :param linger_ms: how long a record waits for others to share its request.
    :param max_queued: records queued unsent before ``produce()`` raises ``BufferError``
        (the caller then polls, i.e. waits for deliveries: back-pressure, bounded memory).
    :param max_queued_kbytes: the same bound in KB; None keeps librdkafka's 1 GB.
    """

    linger_ms: int
    max_queued: int
    max_queued_kbytes: int | None = None


# Long-lived producers of a continuous stream (Firehose, pollers, replay, test writers):
# nobody waits on one record, so 20 ms of linger fills larger requests (fewer round trips,
# better lz4 ratios), and a burst or a broker restart may queue 500k records / 512 MB before
# produce() pushes back. batch.size (1 MB) and batch.num.messages (10k) stay at librdkafka's
# defaults: that is what 20 ms of a busy stream fills.
STREAM = Batching(linger_ms=20, max_queued=500_000, max_queued_kbytes=512 * 1024)
# Stages that flush() at the end of each batch (fan-out, signals, alerts' dead letters):
# flush() sends at once, so linger only groups the records produced together; a window close
# waits at most 5 ms for company. 100k queued records bound the memory of a burst.
FLUSHED = Batching(linger_ms=5, max_queued=100_000)
# The signals stage's outputs: FLUSHED, with a queue small enough that a backfill's burst of
# closes (~300k records in one batch) waits for deliveries instead of holding them all; 10k
# records keep the window-close path's p99 under 15 ms in bench/processors_bench.
CLOSES = Batching(linger_ms=FLUSHED.linger_ms, max_queued=10_000)

# Time a produced record may take to be acknowledged, retries included: 5 min rides out a
# broker restart or a leader election; only then does its delivery report carry an error (and
# the record go to the dead-letter topic, or its batch be produced again).
DELIVERY_TIMEOUT_MS = 300_000


def client_id(role: str | None = None) -> str:
    """``stocktwits-pulse`` or ``stocktwits-pulse-<role>``: what the brokers' logs show."""
    return f"{CLIENT_ID}-{role}" if role else CLIENT_ID


def connection_config(where: Settings | Mapping[str, str]) -> dict[str, Any]:
    """Bootstrap servers and security keys: ``Settings.kafka_config()``, or a ready mapping
    (the local stack asks its own broker before any settings point at it)."""
    return where.kafka_config() if isinstance(where, Settings) else dict(where)


# --- producers -------------------------------------------------------------------------------


def producer_config(
    settings: Settings,
    *,
    batching: Batching = FLUSHED,
    role: str | None = None,
    delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS,
    errors_only: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A producer that loses nothing and writes nothing twice.

    :param errors_only: delivery callbacks only for failed records (a stage that counts
        nothing per record saves a Python call per delivered one).
    :param overrides: librdkafka keys that win over everything above (tests, benches).
    """
    cfg: dict[str, Any] = {
        **settings.kafka_config(),
        # no duplicates from retries and in-order per partition: the broker drops a retried
        # batch it already has (implies acks=all, unlimited retries, ≤5 requests in flight)
        "enable.idempotence": True,
        # acknowledged only once every in-sync replica has the record: a leader that dies
        # right after answering loses nothing (idempotence requires it; stated for readers)
        "acks": "all",
        # JSON and Avro text compresses 3-5x; lz4 is the cheapest codec to write, and faust's
        # aiokafka reads it (through cramjam)
        "compression.type": "lz4",
        "linger.ms": batching.linger_ms,
        "queue.buffering.max.messages": batching.max_queued,
        "delivery.timeout.ms": delivery_timeout_ms,
        "client.id": client_id(role or "producer"),
    }
    if batching.max_queued_kbytes is not None:
        cfg["queue.buffering.max.kbytes"] = batching.max_queued_kbytes
    if errors_only:
        cfg["delivery.report.only.error"] = True
    cfg.update(overrides or {})
    return cfg


def transactional_producer_config(
    settings: Settings, transactional_id: str, *, role: str | None = None
) -> dict[str, Any]:
    """An idempotent producer whose records and input offsets commit together (exactly-once
    with ``send_offsets_to_transaction``); :data:`FLUSHED`, as a transaction ends a batch.

    :param transactional_id: stable per instance: a restarted instance fences its
        predecessor and aborts the transaction it left open instead of waiting it out.
    """
    cfg = producer_config(settings, role=role, delivery_timeout_ms=TRANSACTION_TIMEOUT_MS)
    cfg["transactional.id"] = transactional_id
    cfg["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
    return cfg


# --- consumers -------------------------------------------------------------------------------


def group_consumer_config(
    settings: Settings, group_id: str, *, role: str | None = None
) -> dict[str, Any]:
    """A member of consumer group ``group_id`` that commits by hand what it finished."""
    return {
        **settings.kafka_config(),
        "group.id": group_id,
        # offsets are committed explicitly, after the work they cover is durable (flushed,
        # delivered): a crash re-reads unfinished records instead of skipping them
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,  # a bare commit() cannot commit what was only read
        "auto.offset.reset": "earliest",  # a new group starts at what is retained, not the end
        # exactly-once writers' aborted records are never seen (librdkafka's default; stated
        # because the pipeline's correctness depends on it)
        "isolation.level": "read_committed",
        # prefetch enough to keep 10k-record batches coming, bounded in memory (librdkafka's
        # default lets the local queue hold 64 MB, most of a stage's RSS)
        "fetch.max.bytes": 16 * 1024 * 1024,
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
        "queued.min.messages": 20_000,
        "queued.max.messages.kbytes": 16 * 1024,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "client.id": client_id(role),
    }


def reader_config(
    settings: Settings, name: str, *, read_committed: bool = True, role: str | None = None
) -> dict[str, Any]:
    """A reader that moves nobody's offsets: viewers (``pulse tail``, the board), read-backs
    of what producers wrote, tests and benches.

    Its group (``<name>-<random>``) is its own and never committed to: a reader that assigns
    partitions never joins it; one that subscribes joins it alone, from the start.

    :param read_committed: False also shows records of aborted or open transactions.
    """
    return {
        **settings.kafka_config(),
        "group.id": f"{name}-{uuid.uuid4().hex[:12]}",  # required by the client, even unjoined
        "enable.auto.commit": False,
        # subscribed: from the oldest retained record; assigned at an offset retention has
        # since deleted: on from the oldest one, not a jump to the end
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "client.id": client_id(role),
    }


def offsets_reader_config(
    settings: Settings, group_id: str, *, role: str | None = None
) -> dict[str, Any]:
    """A consumer that asks where group ``group_id`` committed (``committed()``) and where the
    logs end; it never subscribes, so it never joins (nor disturbs) the group it names."""
    return {
        **settings.kafka_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "client.id": client_id(role),
    }


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``faust.App`` for its (aiokafka) clients: the same choices as
    :func:`group_consumer_config` and :data:`FLUSHED` producers. Security is faust's own
    credential object (``processors.app.broker_credentials``)."""
    return {
        "broker": [f"kafka://{host}" for host in settings.bootstrap_servers.split(",")],
        "producer_acks": -1,  # acks=all
        "producer_linger": FLUSHED.linger_ms / 1000,
        # a SIGKILLed worker's partitions move after 10 s instead of faust's default 60 s
        "broker_session_timeout": SESSION_TIMEOUT_MS / 1000,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_MS / 1000,
        "consumer_auto_offset_reset": "earliest",
    }


# --- admin -----------------------------------------------------------------------------------


def admin_config(where: Settings | Mapping[str, str], *, role: str | None = None) -> dict[str, Any]:
    """An admin client: topics, configs, metadata, consumer-group offsets."""
    return {**connection_config(where), "client.id": client_id(role or "admin")}


# --- consumed records ------------------------------------------------------------------------


def position(msg: ck.Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a record a consumer returned without error.

    librdkafka sets all three on every such record (and on a produced record's delivery
    report); confluent-kafka types them Optional because a ``Message`` made by hand, or an
    error event of the whole client, has none.

    :raises ValueError: ``msg`` is not a record of a partition.
    """
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"not a record of a partition: {msg.error() or msg!r}")
    return topic, partition, offset


# --- builders --------------------------------------------------------------------------------


def callbacks(error_cb: ErrorCb | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """What is not configuration: librdkafka's error callback (served by ``poll()``), and
    :data:`QUIET_LOG_LEVEL` for a client whose ``error_cb`` reports failures itself."""
    extra: dict[str, Any] = {}
    if error_cb is not None:
        extra["error_cb"] = error_cb
    if quiet:
        extra["log_level"] = QUIET_LOG_LEVEL
    return extra


def producer(
    config: Mapping[str, Any], *, error_cb: ErrorCb | None = None, quiet: bool = False
) -> ck.Producer:
    """A ``confluent_kafka.Producer`` from :func:`producer_config` or
    :func:`transactional_producer_config`."""
    return ck.Producer({**config, **callbacks(error_cb, quiet=quiet)})


def consumer(
    config: Mapping[str, Any], *, error_cb: ErrorCb | None = None, quiet: bool = False
) -> ck.Consumer:
    """A ``confluent_kafka.Consumer`` from :func:`group_consumer_config`,
    :func:`reader_config` or :func:`offsets_reader_config`."""
    return ck.Consumer({**config, **callbacks(error_cb, quiet=quiet)})


def admin(
    config: Mapping[str, Any], *, error_cb: ErrorCb | None = None, quiet: bool = False
) -> AdminClient:
    """A ``confluent_kafka.admin.AdminClient`` from :func:`admin_config`."""
    return AdminClient({**config, **callbacks(error_cb, quiet=quiet)})

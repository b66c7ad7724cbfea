"""The fan-out stage: raw topics → one MentionBatch record per symbol partition per batch.

A plain confluent-kafka consume-transform-produce loop, outside faust (issue 11, item 2)::

    consume(10k) → decode → mentions by symbol partition (processors.batching, pure)
                 → reading marks per raw partition (processors.progress, pure)
                 → one MentionBatch per symbol partition → flush → commit the raw offsets
                   (exactly_once: one transaction with send_offsets_to_transaction)

Nothing is remembered between batches except where reading stands: duplicates and destroys
are resolved downstream by message id. Bad raw records go to the dead-letter topic and the
stage goes on. A broker or registry that cannot be reached is waited for (logged, retried,
never an exit, never a commit of unflushed work) and never taken for a quiet stream: a
partition is caught up only when the broker has just confirmed it. Fatal errors (failed
authentication, a fenced or fatally failed producer, missing topics) exit non-zero with what
to do. SIGTERM/SIGINT finish the batch, flush, commit, close and exit 0.

Run by ``pulse worker --stage fan-out`` (:func:`run`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka as ck
from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from confluent_kafka.schema_registry.error import SchemaRegistryError

from pulse import health, kafka
from pulse.lifecycle import Stop, stop_on_signals
from pulse.processors.batching import BatchBuilder, MarksLedger, partition_records
from pulse.processors.message_reader import MessageReader
from pulse.processors.progress import RawPartition, ReadingTracker
from pulse.schemas import deadletter, topics
from pulse.schemas.deadletter import Reason
from pulse.schemas.serde import Serde, load_schema
from pulse.settings import Settings

log = logging.getLogger("pulse.processors.fanout")

STAGE = "fan-out"
BATCH_SIZE = 10_000  # records per consume(): large batches keep per-batch costs negligible
CONSUME_TIMEOUT_S = 0.1  # short: idle/quiet verdicts and SIGTERM are looked at every loop
CHECK_EVERY_MS = 500  # at most this often, ask the broker whether caught-up partitions are
ANSWER_OVERDUE_MS = 1_000  # a broker this slow to say where a log ends counts as unreachable
BROKER_TIMEOUT_S = 2.0  # one metadata / watermark / committed request
FLUSH_TIMEOUT_S = 10.0  # one flush() wait; unflushed work is waited for again, never committed
STOP_GRACE_S = 60.0  # after SIGTERM, how long to keep retrying a flush before giving up
PROGRESS_EVERY_S = 10.0
DEAD_LETTER_RAW_MAX = 256 * 1024  # a dead letter must itself fit in a Kafka record
_GONE = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
}
_AUTH = {
    KafkaError._AUTHENTICATION: "authentication failed: check PULSE_SECURITY_PROTOCOL, "
    "PULSE_SASL_MECHANISM, PULSE_SASL_USERNAME / PULSE_SASL_PASSWORD and the TLS files",
    KafkaError.SASL_AUTHENTICATION_FAILED: "SASL authentication failed: check "
    "PULSE_SASL_USERNAME / PULSE_SASL_PASSWORD and PULSE_SASL_MECHANISM",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "not authorized for a topic: grant the fan-out "
    "Read on the raw topics and Write on the mention-batch and dead-letter topics",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "not authorized for the consumer group: grant "
    "Read on group <app id>-fan-out",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "not authorized on the cluster (idempotent "
    "writes need IdempotentWrite)",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "not authorized for the transactional "
    "id: grant Write on <app id>-fan-out-*",
}


CONFIG_ERROR = 2  # exit code: the stage cannot run as configured (the supervisor's FATAL)


class Fatal(Exception):
    """The stage cannot go on; the message says what to do. ``code`` is the exit code:
    :data:`CONFIG_ERROR` when starting again would only repeat the failure."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Transient(Exception):
    """Infrastructure that will likely come back (registry, broker): wait and retry."""


# --- configuration ---------------------------------------------------------------------------


def group_id(settings: Settings) -> str:
    return f"{settings.app_id}-fan-out"


def transactional_id(settings: Settings, instance_id: str) -> str:
    """Stable per instance: a restarted instance fences its predecessor and aborts whatever
    transaction it left open, instead of waiting for it to time out."""
    return f"{settings.app_id}-fan-out-{instance_id}"


def consumer_config(settings: Settings) -> dict[str, Any]:
    """A member of the fan-out group: commits by hand with the batch's records, reads
    committed, bounded prefetch, fails over in ~10 s (pulse.kafka says why)."""
    cfg = kafka.group_consumer_config(settings, group_id(settings), role=STAGE)
    cfg.update(PREFETCH)
    return cfg


# librdkafka keeps each fetched record batch, decompressed, while any record of it waits in
# the local queue, and its size bounds count compressed bytes: the prefetch is most of the
# fan-out's memory beyond its imports. 128 KB per partition and a 1 MB queue hold little
# (fan-out ~96 MB peak in the 500k-record bench, ~105 MB at twice these sizes, ~120 MB at
# four times) and still read ~160k msgs/s, three times what the signals stage applies. A full
# queue postpones a partition's next fetch by fetch.queue.backoff.ms, 1 s by default: at
# 10 ms small fetches are not slow.
PREFETCH = {
    "fetch.max.bytes": 1024 * 1024,
    "max.partition.fetch.bytes": 128 * 1024,
    "queued.min.messages": 10_000,
    "queued.max.messages.kbytes": 1024,
    "fetch.queue.backoff.ms": 10,
}


def producer_config(settings: Settings, txn_id: str | None) -> dict[str, Any]:
    """exactly_once: a transactional producer (records and raw offsets commit together);
    at_least_once: an idempotent one. Either is flushed at the end of every batch."""
    if txn_id is not None:
        return kafka.transactional_producer_config(settings, txn_id, role=STAGE)
    # librdkafka gives up on a record after 2 min (not 5): the loop produces it again and
    # never commits past it, so nothing is lost by giving up sooner
    return kafka.producer_config(settings, role=STAGE, delivery_timeout_ms=120_000)


def admin_client(settings: Settings, on_error: kafka.ErrorCb) -> AdminClient:
    return kafka.admin(kafka.admin_config(settings, role=STAGE), error_cb=on_error)


# --- metrics and health ----------------------------------------------------------------------


class FanOutMetrics(health.Metrics):
    """Prometheus metrics of one fan-out process (a registry of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.events_in = self.counter(
            "pulse_fanout_events_in", "Raw records read, by topic.", ["topic"]
        )
        self.mentions = self.counter(
            "pulse_fanout_mentions", "Mentions written, by kind.", ["kind"]
        )
        self.batches = self.counter("pulse_fanout_batches_written", "MentionBatch records written.")
        self.dead_letters = self.counter(
            "pulse_fanout_dead_letters",
            "Raw records sent to the dead-letter topic, by reason.",
            ["reason"],
        )
        self.retries = self.counter(
            "pulse_fanout_retries",
            "Batches retried after an infrastructure error, by cause.",
            ["cause"],
        )
        self.lag = self.gauge(
            "pulse_fanout_lag",
            "Raw records waiting in the assigned partitions (cached high watermarks).",
        )
        self.read_event_ms = self.gauge(
            "pulse_fanout_read_event_time_ms",
            "Highest event time read per raw partition.",
            ["topic", "partition"],
        )


# --- one batch -------------------------------------------------------------------------------


@dataclass
class Out:
    """One record to write."""

    topic: str
    partition: int | None
    key: bytes
    value: bytes
    headers: kafka.Headers | None = None


@dataclass
class Reads:
    """What a batch read from one raw partition."""

    first: int
    next: int = 0
    count: int = 0
    event_ms: int = -1


@dataclass
class Batch:
    reads: dict[RawPartition, Reads] = field(default_factory=dict)
    dead: list[Out] = field(default_factory=list)
    dead_reasons: dict[str, int] = field(default_factory=dict)


def _fatal_of(err: KafkaError) -> str | None:
    """What to tell the operator if ``err`` means the stage cannot go on, else None."""
    if err.code() in _AUTH:
        return f"{_AUTH[err.code()]} ({err.str()})"
    if err.fatal():
        return (
            f"fatal Kafka client error: {err.str()}. If another fan-out with the same "
            "--instance-id runs, give each its own; else restart the stage."
        )
    return None


def _fatal_error(err: KafkaError) -> Fatal:
    """``err`` as the stage's end: refused credentials or ACLs are configuration errors."""
    return Fatal(_fatal_of(err) or err.str(), CONFIG_ERROR if err.code() in _AUTH else 1)


class FanOut:
    """The fan-out loop of one process. :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        instance_id: str,
        batch_size: int = BATCH_SIZE,
        serde: Serde | None = None,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.eos = settings.processing_guarantee == "exactly_once"
        self.metrics = FanOutMetrics()
        self.serde = serde or Serde(settings)
        self.raw_topics = [
            topics.MESSAGES.full_name(settings),
            topics.RAW_SENTIMENT.full_name(settings),
        ]
        self.out_topic = topics.MENTION_BATCHES.full_name(settings)
        self.dlq_topic = topics.DEAD_LETTER.full_name(settings)
        self.builder = BatchBuilder(settings.symbol_partitions)
        self.tracker = ReadingTracker(settings.raw_idle_ms, int(settings.idle_close_s * 1000))
        self.ledger = MarksLedger()
        self.raw_partitions = 0
        self._fatal: str | None = None  # from error_cb, raised by the loop
        self._fatal_code = 1
        self._next: dict[RawPartition, int] = {}  # next offset to read, where known
        self._tps: dict[RawPartition, TopicPartition] = {}
        self._uncommitted: dict[RawPartition, int] = {}
        self._last_check_ms = 0
        self._asked: tuple[int, dict[TopicPartition, Any]] | None = None
        self._reachable = True
        self._heartbeat = time.monotonic()
        self._warned: dict[str, float] = {}
        self._stats = {"events": 0, "mentions": 0, "records": 0, "since": time.monotonic()}
        self._gauge_at = 0.0
        self._lag = 0
        # per raw topic: bytes → what its adder takes (a decoded record, or MessageParts)
        self._decoders: dict[str, Callable[[bytes], Any]] = {}
        self._adders: dict[str, Callable[[Any], int]] = {}
        self.consumer = kafka.consumer(consumer_config(settings), error_cb=self._on_error)
        txn = transactional_id(settings, instance_id) if self.eos else None
        self.producer = kafka.producer(producer_config(settings, txn), error_cb=self._on_error)
        self.admin = admin_client(settings, self._on_error)

    # --- errors -------------------------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: fatal ones end the loop, the rest are logged."""
        if _fatal_of(err) is not None:
            if self._fatal is None:
                fatal = _fatal_error(err)
                self._fatal, self._fatal_code = str(fatal), fatal.code
            return
        self._warn(f"kafka:{err.code()}", "kafka: %s (retrying)", err.str())

    def _warn(self, key: str, fmt: str, *args: Any) -> None:
        """A warning at most every 10 s per ``key``: an outage must not flood the log."""
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= 10:
            self._warned[key] = now
            log.warning(fmt, *args)

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            raise Fatal(self._fatal, self._fatal_code)

    def _serve_callbacks(self) -> None:
        """Let librdkafka call ``error_cb``: it does so only from poll(), and a refused
        password shows nowhere else (metadata requests just time out). Before the
        subscription only: the consumer has nothing to return yet."""
        self.consumer.poll(0)
        self.producer.poll(0)
        self.admin.poll(0)

    # --- start ------------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> bool:
        """Wait for the broker, the topics and the registry; subscribe. False if stopped."""
        while not stop.is_set():
            self._serve_callbacks()
            self._check_fatal()
            try:
                self._prepare()
                return True
            except Transient as exc:
                self._serve_callbacks()
                self._check_fatal()  # the transient-looking failure was the credentials
                self._warn("start", "waiting for Kafka / the registry: %s", exc)
                stop.wait(1.0)
        return False

    def _prepare(self) -> None:
        self.raw_partitions = self._count_raw_partitions()
        try:
            encode = self.serde.serializer(topics.MENTION_BATCHES)
            self._encode_dlq = self.serde.serializer(topics.DEAD_LETTER)
        except Exception as exc:  # the registry (or the network to it) is down
            raise Transient(f"schema registry: {exc}") from exc
        self._encode = encode
        messages, sentiment = self.raw_topics
        # messages: only the fields that become mentions (natively when built, see
        # processors/message_reader.py); /sentiment events are few and small
        self._decoders = {
            messages: MessageReader(
                load_schema(topics.MESSAGES.schema_file),
                self.serde.writer_schema,
                self.serde.deserializer(topics.MESSAGES),
            ),
            sentiment: self.serde.deserializer(topics.RAW_SENTIMENT),
        }
        self._adders = {
            messages: self.builder.add_message_parts,
            sentiment: self.builder.add_sentiment,
        }
        if self.eos:
            self._init_transactions()
        self.consumer.subscribe(
            self.raw_topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _count_raw_partitions(self) -> int:
        try:
            md = self.consumer.list_topics(timeout=BROKER_TIMEOUT_S * 5)
        except KafkaException as exc:
            raise Transient(f"broker metadata: {exc.args[0].str()}") from exc
        missing = [
            t
            for t in [*self.raw_topics, self.out_topic, self.dlq_topic]
            if t not in md.topics or md.topics[t].error is not None
        ]
        if missing:
            raise Fatal(
                f"topic(s) {', '.join(missing)} do not exist: run `pulse topics` "
                "(or `pulse local up`) first, with the same PULSE_TOPIC_PREFIX",
                CONFIG_ERROR,
            )
        return sum(len(md.topics[t].partitions) for t in self.raw_topics)

    def _init_transactions(self) -> None:
        try:
            self.producer.init_transactions(BROKER_TIMEOUT_S * 15)
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() or err.code() in _AUTH:
                raise _fatal_error(err) from exc
            raise Transient(f"init_transactions: {err.str()}") from exc

    # --- rebalance ----------------------------------------------------------------------

    def _on_assign(self, consumer: ck.Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        for key in keys:
            self._next.pop(key, None)  # learnt from the committed offset on the next check
            self._tps[key] = TopicPartition(*key)
        self.tracker.assign(keys, _now_ms())
        self._last_check_ms = 0
        log.info("assigned %s", _names(keys))

    def _on_revoke(self, consumer: ck.Consumer, partitions: list[TopicPartition]) -> None:
        # between batches: everything read so far is written and committed (or, with a
        # failed commit, re-read by the next owner: at least once)
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.tracker.revoke(keys)
        for key in keys:
            self._next.pop(key, None)
            self._uncommitted.pop(key, None)
        log.info("revoked %s", _names(keys))

    # --- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Batches until ``stop``; then the last batch is finished and committed. Exit code."""
        if not self.start(stop):
            return 0
        log.info(
            "fan-out %s → %s (%d symbol partitions, %d raw partitions, %s)",
            ", ".join(self.raw_topics),
            self.out_topic,
            self.settings.symbol_partitions,
            self.raw_partitions,
            self.settings.processing_guarantee,
        )
        while not stop.is_set():
            self.step(stop)
        return 0

    def step(self, stop: threading.Event) -> None:
        """One batch: consume, transform, write, commit; or, with nothing read, the marks
        alone when their verdicts changed."""
        self._heartbeat = time.monotonic()
        self._check_fatal()
        try:
            msgs = self.consumer.consume(self.batch_size, CONSUME_TIMEOUT_S)
        except KafkaException as exc:
            self._consume_error(exc.args[0])
            return
        self._check_fatal()
        snapshot = (self.tracker.snapshot(), self.ledger.snapshot()) if self.eos else None
        try:
            batch = self._transform(msgs)
        except Transient as exc:
            self._retry_later("decode", exc, stop)
            self._seek_back(msgs)
            return
        now = _now_ms()
        for key, r in batch.reads.items():
            self.tracker.on_read(key, r.next, r.event_ms, now)
            self._next[key] = r.next
        self._refresh(now)
        out = self._records(now)
        offsets = {key: r.next for key, r in batch.reads.items()}
        if out or batch.dead or offsets:
            self._write(out + batch.dead, offsets, stop, snapshot)
        self._account(batch, out)

    def _transform(self, msgs: list[ck.Message]) -> Batch:
        """Decode and add every record's mentions to the builder; bad ones to dead letters."""
        self.builder.clear()
        batch = Batch()
        reads = batch.reads
        decoders, adders = self._decoders, self._adders
        for msg in msgs:
            if (err := msg.error()) is not None:
                self._consume_error(err)
                continue
            # kafka.position inline (a call per record costs ~50 ns); it raises on a message
            # that is no record of a partition, which a consumer never returns
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:
                topic, partition, offset = kafka.position(msg)
            key = (topic, partition)
            r = reads.get(key)
            if r is None:
                r = reads[key] = Reads(first=offset)
            r.next = offset + 1
            r.count += 1
            value = msg.value()
            try:
                if value is None:
                    raise TypeError("a record without a value")
                record = decoders[topic](value)
            except Exception as exc:  # noqa: BLE001 - bad bytes, or the registry is down
                self._bad(batch, msg, Reason.DECODE_FAILED, "decode", _decode_failure(exc))
                continue
            try:
                t = adders[topic](record)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self._bad(batch, msg, Reason.PROCESS_FAILED, "process", exc)
                continue
            if t > r.event_ms:
                r.event_ms = t
        return batch

    def _consume_error(self, err: KafkaError) -> None:
        if _fatal_of(err) is not None:
            raise _fatal_error(err)
        self._warn(f"consume:{err.code()}", "consume: %s (retrying)", err.str())

    def _bad(
        self, batch: Batch, msg: ck.Message, reason: Reason, stage: str, exc: BaseException
    ) -> None:
        raw = msg.value()
        error = f"{type(exc).__name__}: {exc}"
        if raw is not None and len(raw) > DEAD_LETTER_RAW_MAX:
            error += f" [raw truncated from {len(raw)} bytes]"
            raw = raw[:DEAD_LETTER_RAW_MAX]
        topic, partition, offset = kafka.position(msg)
        record = deadletter.dead_letter(
            raw,
            source=topic,
            stage=STAGE,
            reason=reason,
            error=error,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
        )
        batch.dead.append(
            Out(
                self.dlq_topic,
                None,
                topic.encode(),
                self._encode_dlq(record),
                deadletter.headers(reason, STAGE, topic),
            )
        )
        batch.dead_reasons[reason.value] = batch.dead_reasons.get(reason.value, 0) + 1
        log.warning(
            "dead letter (%s) %s[%d]@%d: %s", reason.value, topic, partition, offset, error[:200]
        )

    def _seek_back(self, msgs: list[ck.Message]) -> None:
        """Read a batch that could not be processed again from its first record."""
        first: dict[RawPartition, int] = {}
        for msg in msgs:
            if msg.error() is None:
                topic, partition, offset = kafka.position(msg)
                first.setdefault((topic, partition), offset)
        self._seek(first)

    def _seek(self, offsets: dict[RawPartition, int]) -> None:
        for (topic, partition), offset in offsets.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
                self._next[(topic, partition)] = offset
            except KafkaException as exc:  # revoked meanwhile: the next owner reads it
                log.warning("seek %s[%d] to %d: %s", topic, partition, offset, exc)

    def _retry_later(self, cause: str, exc: BaseException, stop: threading.Event) -> None:
        self.metrics.retries.labels(cause).inc()
        self._warn(f"retry:{cause}", "%s failed, retrying the batch: %s", cause, exc)
        stop.wait(1.0)

    # --- caught up or not -----------------------------------------------------------------

    def _refresh(self, now_ms: int) -> None:
        """Tell the tracker which partitions have records waiting (cached high watermarks,
        free) and, at most every CHECK_EVERY_MS, have the broker confirm the others."""
        self._collect(now_ms)
        suspects: list[RawPartition] = []
        lag = 0
        for key in self.tracker.readings:
            try:
                low, high = self.consumer.get_watermark_offsets(self._tps[key], cached=True)
            except (KafkaException, TypeError, KeyError):
                low, high = -1, -1
            pos = self._next.get(key)
            if pos is not None and 0 <= max(pos, low) < high:
                self.tracker.on_position(key, max(pos, low), high, now_ms)  # records waiting
                lag += high - max(pos, low)
            else:
                suspects.append(key)
        self._lag = lag
        self.metrics.lag.set(lag)
        if suspects and self._asked is None and now_ms - self._last_check_ms >= CHECK_EVERY_MS:
            self._ask(suspects, now_ms)

    def _ask(self, keys: list[RawPartition], now_ms: int) -> None:
        """Ask where the logs of ``keys`` end, on the admin client's own connection (the
        consumer's sits behind its fetch long-poll); the answer is collected by a later loop."""
        self._last_check_ms = now_ms
        try:
            self._learn_starts([k for k in keys if k not in self._next])
            futures = self.admin.list_offsets(
                {self._tps[k]: OffsetSpec.latest() for k in keys},
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=BROKER_TIMEOUT_S,
            )
        except (KafkaException, FutureTimeout) as exc:
            self._unreachable(exc)
            return
        self._asked = (now_ms, futures)

    def _collect(self, now_ms: int) -> None:
        """Apply the broker's answer when it is in; an answer overdue or failed means the
        broker cannot be asked: nothing is caught up (a broker outage is not a quiet stream)."""
        if self._asked is None:
            return
        asked_ms, futures = self._asked
        if not all(f.done() for f in futures.values()):
            if now_ms - asked_ms > ANSWER_OVERDUE_MS:
                self.tracker.on_unreachable()
            return
        self._asked = None
        try:
            ends = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
        except KafkaException as exc:
            self._unreachable(exc)
            return
        for key, high in ends.items():
            pos = self._next.get(key)
            if pos is not None and key in self.tracker.readings:
                self.tracker.on_position(key, pos, high, now_ms)
        if not self._reachable:
            log.info("broker answering again")
        self._reachable = True

    def _unreachable(self, exc: Exception) -> None:
        self.tracker.on_unreachable()
        self._reachable = False
        # after a broker restart the admin client keeps asking with the leader epochs it
        # knew (FENCED_LEADER_EPOCH, forever): a new one starts from fresh metadata
        self.admin = admin_client(self.settings, self._on_error)
        self._warn(
            "unreachable",
            "broker not answering (%s): no partition counts as caught up until it does",
            exc,
        )

    def _learn_starts(self, keys: list[RawPartition]) -> None:
        """Where reading starts in partitions nothing was read from yet: the committed
        offset, or the log start (auto.offset.reset earliest). Once per assignment."""
        if not keys:
            return
        tps = [self._tps[k] for k in keys]
        committed = self.consumer.committed(tps, timeout=BROKER_TIMEOUT_S)
        earliest = self.admin.list_offsets(
            {tp: OffsetSpec.earliest() for tp in tps}, request_timeout=BROKER_TIMEOUT_S
        )
        low = {
            (tp.topic, tp.partition): f.result(BROKER_TIMEOUT_S * 2).offset
            for tp, f in earliest.items()
        }
        for tp in committed:
            key = (tp.topic, tp.partition)
            self._next[key] = max(tp.offset, low[key])

    # --- writing ------------------------------------------------------------------------

    def _records(self, now_ms: int) -> list[Out]:
        marks = self.tracker.marks(now_ms)
        encode, topic = self._encode, self.out_topic
        return [
            Out(topic, p, str(p).encode(), encode(record))
            for p, record in partition_records(
                self.builder, marks, self.ledger, self.raw_partitions, now_ms
            )
        ]

    def _write(
        self, out: list[Out], offsets: dict[RawPartition, int], stop: threading.Event, snapshot: Any
    ) -> None:
        if self.eos:
            if not self._transaction(out, offsets):
                self._abort_and_rewind(snapshot, stop)
            return
        self._deliver(out, stop)
        self._uncommitted.update(offsets)
        self._commit(stop)

    def _produce(self, rec: Out, on_delivery: Callable[..., None] | None = None) -> None:
        while True:
            try:
                if rec.partition is None:
                    self.producer.produce(
                        rec.topic, rec.value, rec.key, headers=rec.headers, on_delivery=on_delivery
                    )
                else:
                    self.producer.produce(
                        rec.topic,
                        rec.value,
                        rec.key,
                        rec.partition,
                        headers=rec.headers,
                        on_delivery=on_delivery,
                    )
                return
            except BufferError:
                self.producer.poll(0.1)

    def _deliver(self, out: list[Out], stop: threading.Event) -> None:
        """At least once: every record acknowledged before the offsets are committed; what
        the broker did not take is produced again, for as long as it takes."""
        pending = out
        stop_deadline: float | None = None
        while pending:
            failed: list[Out] = []
            for rec in pending:
                self._produce(rec, _delivery(rec, failed))
            while (left := self.producer.flush(FLUSH_TIMEOUT_S)) > 0:
                self._heartbeat = time.monotonic()  # waiting on purpose: alive, not stuck
                self._check_fatal()
                self.metrics.retries.labels("flush").inc()
                self._warn(
                    "flush",
                    "%d record(s) not yet acknowledged; waiting (nothing is "
                    "committed before they are)",
                    left,
                )
                stop_deadline = self._stop_deadline(stop, stop_deadline)
            self._check_fatal()
            if failed:
                self.metrics.retries.labels("delivery").inc()
                self._warn(
                    "delivery", "%d record(s) not accepted; producing them again", len(failed)
                )
                stop_deadline = self._stop_deadline(stop, stop_deadline)
                stop.wait(0.5)
            pending = failed

    def _stop_deadline(self, stop: threading.Event, deadline: float | None) -> float | None:
        """After SIGTERM, give unflushed work STOP_GRACE_S more, then exit without commit."""
        if not stop.is_set():
            return None
        now = time.monotonic()
        deadline = deadline or now + STOP_GRACE_S
        if now >= deadline:
            raise Fatal(
                "stopped with records the broker never acknowledged; their input "
                "was not committed and is read again by the next run"
            )
        return deadline

    def _commit(self, stop: threading.Event) -> None:
        """Commit what was flushed; a failure is retried, then left for the next batch's
        commit (or re-read by the next owner: never lost)."""
        if not self._uncommitted:
            return  # marks alone: nothing read
        tps = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()]
        for attempt in range(5):
            try:
                self.consumer.commit(offsets=tps, asynchronous=False)
                self._uncommitted.clear()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() in _GONE:
                    log.info("commit skipped, partitions moved: %s", err.str())
                    self._uncommitted.clear()
                    return
                self._check_fatal()
                self.metrics.retries.labels("commit").inc()
                self._warn("commit", "commit failed (%s), attempt %d", err.str(), attempt + 1)
                stop.wait(min(0.2 * 2**attempt, 2.0))

    # --- exactly once ----------------------------------------------------------------------

    def _transaction(self, out: list[Out], offsets: dict[RawPartition, int]) -> bool:
        """One transaction: the records and the raw offsets. False if it was aborted."""
        try:
            self.producer.begin_transaction()
            for rec in out:
                self._produce(rec)
            if offsets:
                self.producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    self.consumer.consumer_group_metadata(),
                    BROKER_TIMEOUT_S * 15,
                )
            self._commit_transaction()
            return True
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() or err.code() in _AUTH:
                raise _fatal_error(err) from exc
            self.metrics.retries.labels("transaction").inc()
            self._warn(
                "txn",
                "transaction failed (%s): aborting, reading again from the committed offsets",
                err.str(),
            )
            return False

    def _commit_transaction(self) -> None:
        while True:
            try:
                self.producer.commit_transaction(BROKER_TIMEOUT_S * 15)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
                self._warn("txn-commit", "commit_transaction: %s (retrying)", exc.args[0].str())

    def _abort_and_rewind(self, snapshot: Any, stop: threading.Event) -> None:
        while not self._try_abort():
            stop.wait(1.0)
        tracker_snap, ledger_snap = snapshot
        self.tracker.restore(tracker_snap)
        self.ledger.restore(ledger_snap)
        while True:
            try:
                assigned = self.consumer.assignment()
                committed = self.consumer.committed(assigned, timeout=BROKER_TIMEOUT_S * 5)
                break
            except KafkaException as exc:
                self._heartbeat = time.monotonic()
                self._check_fatal()
                self._warn("rewind", "committed offsets unavailable (%s); retrying", exc)
                stop.wait(1.0)
        self._seek(
            {
                (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else ck.OFFSET_BEGINNING
                for tp in committed
            }
        )
        for tp in committed:
            if tp.offset < 0:
                self._next.pop((tp.topic, tp.partition), None)

    def _try_abort(self) -> bool:
        try:
            self.producer.abort_transaction(BROKER_TIMEOUT_S * 15)
            return True
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                raise _fatal_error(err) from exc
            if err.code() == KafkaError._STATE:
                return True  # no transaction in progress
            self._warn("abort", "abort_transaction: %s (retrying)", err.str())
            return False

    # --- accounting -------------------------------------------------------------------------

    def _account(self, batch: Batch, out: list[Out]) -> None:
        m = self.metrics
        for (topic, _), r in batch.reads.items():
            m.events_in.labels(topic).inc(r.count)
            self._stats["events"] += r.count
        for kind, n in self.builder.kinds.items():
            if n:
                m.mentions.labels(kind).inc(n)
                self._stats["mentions"] += n
        written = len(out)  # MentionBatch records (dead letters are counted by reason)
        if written:
            m.batches.inc(written)
            self._stats["records"] += written
        for reason, n in batch.dead_reasons.items():
            m.dead_letters.labels(reason).inc(n)
        now = time.monotonic()
        if now - self._gauge_at >= 1.0:
            self._gauge_at = now
            for (topic, partition), reading in self.tracker.readings.items():
                m.read_event_ms.labels(topic, str(partition)).set(reading.event_ms)
        self._log_progress(now)

    def _log_progress(self, now: float) -> None:
        s = self._stats
        elapsed = now - s["since"]
        if elapsed < PROGRESS_EVERY_S:
            return
        if s["events"]:
            log.info(
                "read %d raw records in %.1f s (%.0f msgs/s), %d mentions in %d records, lag %d",
                s["events"],
                elapsed,
                s["events"] / elapsed,
                s["mentions"],
                s["records"],
                self._lag,
            )
        self._stats = {"events": 0, "mentions": 0, "records": 0, "since": now}

    def health(self) -> dict[str, Any]:
        stalled = time.monotonic() - self._heartbeat > 60
        return {
            "healthy": self._fatal is None and not stalled,
            "stage": STAGE,
            "broker_reachable": self._reachable,
            "assigned": len(self.tracker.readings),
            "fatal": self._fatal,
        }

    def close(self) -> None:
        """Flush what is left, leave the group (the offsets are committed per batch)."""
        try:
            self.producer.flush(FLUSH_TIMEOUT_S)
        finally:
            self.consumer.close()


def _delivery(rec: Out, failed: list[Out]) -> Callable[[KafkaError | None, Any], None]:
    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(rec)

    return on_delivery


def _decode_failure(exc: Exception) -> Exception:
    """A decode failure is the record's fault (dead letter), unless the registry could not
    be asked: then it is :class:`Transient` and the batch is read again later."""
    if isinstance(exc, SchemaRegistryError):
        if exc.http_status_code in (401, 403):
            raise Fatal(
                f"schema registry refused us ({exc}): check PULSE_SCHEMA_REGISTRY_AUTH",
                CONFIG_ERROR,
            ) from exc
        if exc.http_status_code == 404 or 400 <= exc.http_status_code < 500:
            return exc  # unknown schema id: the record is bad
        raise Transient(f"schema registry: {exc}") from exc
    if isinstance(
        exc,
        (ValueError, TypeError, KeyError, IndexError, EOFError, AttributeError, UnicodeDecodeError),
    ) or type(exc).__module__.startswith("fastavro"):
        return exc
    raise Transient(f"decode: {type(exc).__name__}: {exc}") from exc


def _now_ms() -> int:
    return int(time.monotonic() * 1000)  # only durations: immune to wall-clock jumps


def _names(keys: list[RawPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(keys)) or "nothing"


# --- entry point -----------------------------------------------------------------------------


def run(
    settings: Settings,
    *,
    instance_id: str | None = None,
    batch_size: int | None = None,
    port: int | None = None,
) -> int:
    """Run the fan-out stage until SIGTERM/SIGINT; the exit code.

    :param instance_id: stable name, unique among running fan-outs; exactly_once derives the
        transactional id from it (None: the host name).
    :param batch_size: records per consume() (None: :data:`BATCH_SIZE`).
    :param port: /metrics and /healthz (None: ``PULSE_FAN_OUT_PORT``; 0 picks one; -1 none).
    """
    if not logging.getLogger().handlers:  # run on its own, not under the pulse command
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    stop = Stop()
    with stop_on_signals(stop):  # from the start: a SIGTERM while connecting is a clean stop
        return _run(
            settings,
            stop,
            instance_id or socket.gethostname(),
            batch_size or BATCH_SIZE,
            settings.fan_out_port if port is None else port,
        )


def _run(settings: Settings, stop: Stop, instance_id: str, batch_size: int, port: int) -> int:
    try:
        fan = FanOut(settings, instance_id=instance_id, batch_size=batch_size)
    except KafkaException as exc:
        log.error("fan-out: bad Kafka configuration: %s", exc)
        return 2
    server = health.start(settings, port, fan.metrics, live=fan.health)
    try:
        code = fan.run(stop.event)
    except Fatal as exc:
        log.error("fan-out stopped: %s", exc)
        code = exc.code
    finally:
        fan.close()
        if server is not None:
            server.stop()
    log.info("fan-out exited (%d)", code)
    return code

"""The one way producers write to Kafka: Avro via the registry, keyed, idempotent, dead-lettered.

``Publisher.publish(parsed)`` encodes a :class:`producers.parse.Parsed` with the topic's
registry serializer and produces it keyed by its upstream id. What cannot be encoded, or what the
broker does not accept after librdkafka's own retries, goes to the dead-letter topic with the
bytes we had and a :class:`~schemas.deadletter.Reason` — nothing is dropped silently.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import confluent_kafka as ck
import orjson

from pulse import kafka
from pulse.producers import metrics
from pulse.producers.parse import Parsed, ParseError
from pulse.schemas import deadletter
from pulse.schemas.deadletter import Reason
from pulse.schemas.serde import Serde
from pulse.schemas.topics import DEAD_LETTER, TopicSpec
from pulse.settings import Settings

log = logging.getLogger(__name__)

Delivered = Callable[[], None]
# a dead letter must itself fit in a Kafka record (broker default ~1 MB): keep a prefix beyond this
DEAD_LETTER_RAW_MAX = 256 * 1024
# Delivery reports are served (and counted, one callback per record) by a poll(0) after every
# POLL_EVERY records rather than after each: a poll costs ~1–2 µs even when it finds nothing.
# Long-running producers also poll on their own clock (the Firehose client every second,
# before each checkpoint); flush() serves whatever is left.
POLL_EVERY = 32


class Publisher:
    """Encode, produce and account for every record of one producer process.

    :param source: what the dead-letter records name as source (firehose, rest, replay …).
    """

    def __init__(
        self,
        settings: Settings,
        source: str,
        *,
        serde: Serde | None = None,
        producer: ck.Producer | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.serde = serde or Serde(settings)
        # a long-lived producer of a continuous stream: idempotent, acks=all, batches worth
        # sending, 5 min of retries before a record is dead-lettered (pulse.kafka says why)
        self.producer = producer or kafka.producer(
            kafka.producer_config(settings, batching=kafka.STREAM, overrides=config)
        )
        self.produced = self.delivered = self.failed = self.dead_lettered = 0
        self._encoders: dict[str, Callable[[dict[str, Any]], bytes]] = {}
        self._topics: dict[str, str] = {}
        self._deferred: list[Callable[[], None]] = []
        self._event_counters: dict[str, Any] = {}
        # per record, the hot path does one lookup (spec name → encoder, topic) and counts an
        # acknowledgement in a plain dict; Prometheus (a lock and a few calls per inc) is
        # updated from it once per poll, for all the records that poll acknowledged
        self._routes: dict[str, tuple[Callable[[dict[str, Any]], bytes], str]] = {}
        self._acked: dict[str, int] = {}
        self._on_delivery_cb = self._on_delivery  # bound once, not once per record
        self._unpolled = 0  # records produced since the last poll

    # --- encoding ---------------------------------------------------------------------------

    def topic(self, spec: TopicSpec) -> str:
        name = self._topics.get(spec.name)
        if name is None:
            name = self._topics[spec.name] = spec.full_name(self.settings)
        return name

    def encoder(self, spec: TopicSpec) -> Callable[[dict[str, Any]], bytes]:
        enc = self._encoders.get(spec.name)
        if enc is None:
            enc = self._encoders[spec.name] = self.serde.serializer(spec)
        return enc

    def header(self, spec: TopicSpec) -> bytes:
        """The frame header of ``spec``'s values (magic byte + schema id), for values encoded
        elsewhere; registers the schema on first use, as :meth:`encoder` does."""
        return self.serde.header(spec)

    # --- producing --------------------------------------------------------------------------

    def publish(
        self,
        item: Parsed,
        *,
        headers: kafka.Headers | None = None,
        on_delivered: Delivered | None = None,
        raw: bytes | None = None,
    ) -> bool:
        """Encode and produce one record; False if it went to the dead-letter topic instead.

        :param on_delivered: called once the broker acknowledged the record (or its dead letter).
        :param raw: the upstream bytes, kept for the dead letter if encoding fails.
        """
        spec, key, record = item
        route = self._routes.get(spec.name)
        if route is None:
            route = self._routes[spec.name] = (self.encoder(spec), self.topic(spec))
        encode, topic = route
        try:
            value = encode(record)
        except Exception as exc:  # noqa: BLE001 - any encoder failure is a bad record, not a crash
            fallback = raw if raw is not None else orjson.dumps(record, default=str)
            self.dead_letter(
                fallback,
                Reason.SERIALIZE_FAILED,
                f"{type(exc).__name__}: {exc}",
                stage="serialize",
                source_topic=topic,
                on_delivered=on_delivered,
            )
            return False
        self._send(topic, key.encode(), value, headers, on_delivered)
        return True

    def publish_value(
        self,
        spec: TopicSpec,
        key: bytes,
        value: bytes,
        *,
        headers: kafka.Headers | None = None,
        on_delivered: Delivered | None = None,
    ) -> None:
        """Produce a value already encoded and framed for ``spec`` (the native fast path, see
        :mod:`producers.native`); delivery accounting and dead letters as for :meth:`publish`."""
        topic = self._topics.get(spec.name)
        if topic is None:
            topic = self.topic(spec)
        self._send(topic, key, value, headers, on_delivered)

    def _send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: kafka.Headers | None,
        on_delivered: Delivered | None,
    ) -> None:
        if headers is None and on_delivered is None:
            # the common case, inlined: what produce() does, minus its per-record choices
            try:
                self.producer.produce(topic, value, key, on_delivery=self._on_delivery_cb)
            except BufferError:
                self.produce(topic, key, value)  # waits for room in the queue
                return
            except ck.KafkaException as exc:
                self._refused(topic, value, exc)
                return
            self.produced += 1
            self._unpolled += 1
            if self._unpolled >= POLL_EVERY:
                self._poll(0)
            return
        self.produce(topic, key, value, headers=headers, on_delivered=on_delivered)

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        headers: kafka.Headers | None = None,
        on_delivered: Delivered | None = None,
    ) -> None:
        """Produce pre-encoded bytes; waits (serving callbacks) while the local queue is full."""
        callback = (
            self._on_delivery
            if on_delivered is None and headers is None
            else functools.partial(self._on_delivery, done=on_delivered, headers=headers)
        )
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=callback)
                break
            except BufferError:
                self._poll(0.05)  # queue full: let deliveries drain it
            except ck.KafkaException as exc:
                self._refused(topic, value, exc, headers=headers, on_delivered=on_delivered)
                return
        self.produced += 1
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._poll(0)

    def _refused(
        self,
        topic: str,
        value: bytes,
        exc: ck.KafkaException,
        *,
        headers: kafka.Headers | None = None,
        on_delivered: Delivered | None = None,
    ) -> None:
        """A record the client refused before queueing it (e.g. too large): dead-lettered."""
        if topic == self.topic(DEAD_LETTER):
            log.error("dead letter refused by the client: %s", exc)
            if on_delivered is not None:
                on_delivered()
            return
        code = exc.args[0].code() if exc.args else None
        reason = (
            Reason.TOO_LARGE if code == ck.KafkaError.MSG_SIZE_TOO_LARGE else Reason.DELIVERY_FAILED
        )
        self.dead_letter(
            value,
            reason,
            str(exc),
            stage="publish",
            source_topic=topic,
            on_delivered=on_delivered,
            headers=headers,
        )

    def reject(
        self,
        raw: bytes | None,
        error: ParseError,
        *,
        on_delivered: Delivered | None = None,
        headers: kafka.Headers | None = None,
    ) -> None:
        """Dead-letter upstream input that failed to parse."""
        self.dead_letter(
            raw, error.reason, str(error), stage="parse", headers=headers, on_delivered=on_delivered
        )

    def dead_letter(
        self,
        raw: bytes | None,
        reason: Reason,
        error: str,
        *,
        stage: str,
        source_topic: str | None = None,
        on_delivered: Delivered | None = None,
        headers: kafka.Headers | None = None,
    ) -> None:
        """Write a ``DeadLetter`` record (raw bytes, reason, source, time), key = source.

        :param headers: extra headers (e.g. the Firehose seq_id, so a resume can find it).
        """
        if raw is not None and len(raw) > DEAD_LETTER_RAW_MAX:
            error = f"{error} [raw truncated from {len(raw)} to {DEAD_LETTER_RAW_MAX} bytes]"
            raw = raw[:DEAD_LETTER_RAW_MAX]
        record = deadletter.dead_letter(
            raw,
            source=self.source,
            stage=stage,
            reason=reason,
            error=error,
            source_topic=source_topic,
        )
        metrics.DEAD_LETTERS.labels(self.source, reason.value).inc()
        self.dead_lettered += 1
        log.warning("dead letter (%s, %s): %s", reason.value, stage, error[:200])
        try:
            value = self.encoder(DEAD_LETTER)(record)
        except Exception:  # the registry is gone: nothing left to write to, so say it loudly
            log.exception("could not encode a dead letter; raw=%r", (raw or b"")[:200])
            if on_delivered is not None:
                on_delivered()
            return
        all_headers = deadletter.headers(reason, stage, source_topic) + (headers or [])
        self.produce(
            self.topic(DEAD_LETTER),
            self.source.encode(),
            value,
            headers=all_headers,
            on_delivered=on_delivered,
        )

    # --- delivery ---------------------------------------------------------------------------

    def _on_delivery(
        self,
        err: ck.KafkaError | None,
        msg: ck.Message,
        done: Delivered | None = None,
        headers: kafka.Headers | None = None,
    ) -> None:
        """Count the outcome; a failed record is dead-lettered, and ``done`` then waits for
        its dead letter, so a Firehose checkpoint never passes an event that is nowhere."""
        topic = msg.topic() or "?"
        if err is None:
            self.delivered += 1
            acked = self._acked
            acked[topic] = acked.get(topic, 0) + 1  # into metrics.EVENTS after this poll
            if done is not None:
                done()
            return
        self.failed += 1
        metrics.DELIVERY_ERRORS.labels(self.source, topic).inc()
        log.error("delivery to %s failed: %s", topic, err)
        if topic == self.topic(DEAD_LETTER):
            return  # a dead letter that cannot be delivered: counted and logged, no loop
        # librdkafka forbids producing from inside its callback: write the dead letter after
        # the poll() or flush() that delivered this report returns
        value = msg.value()
        self._deferred.append(
            lambda: self.dead_letter(
                value,
                Reason.DELIVERY_FAILED,
                str(err),
                stage="publish",
                source_topic=topic,
                on_delivered=done,
                headers=headers,
            )
        )

    def _count_acked(self) -> None:
        """Add the acknowledgements counted since the last poll to metrics.EVENTS."""
        for topic, n in self._acked.items():
            counter = self._event_counters.get(topic)
            if counter is None:  # labels() locks and hashes: once per topic, not per record
                counter = self._event_counters[topic] = metrics.EVENTS.labels(self.source, topic)
            counter.inc(n)
        self._acked.clear()

    def _drain_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)()

    def _poll(self, timeout_s: float) -> None:
        self._unpolled = 0
        self.producer.poll(timeout_s)
        if self._acked:
            self._count_acked()
        if self._deferred:
            self._drain_deferred()

    def poll(self, timeout_s: float = 0.0) -> None:
        self._poll(timeout_s)

    def flush(self, timeout_s: float = 60.0) -> int:
        """Wait for every outstanding record; returns how many are still not settled."""
        deadline = time.monotonic() + timeout_s
        left = self.producer.flush(timeout_s)
        while self._deferred:  # dead letters of failed records, then wait for them too
            self._drain_deferred()
            left = self.producer.flush(max(0.0, deadline - time.monotonic()))
        self._count_acked()
        if left:
            log.error("%d record(s) still unacknowledged after %.0fs", left, timeout_s)
        return int(left)

    def stats(self) -> dict[str, int]:
        return {
            "produced": self.produced,
            "delivered": self.delivered,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "queued": len(self.producer),
        }


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- reading back what was written (resume points, dedup state) ------------------------------


def read_consumer(settings: Settings) -> ck.Consumer:
    """A consumer for reading back what producers wrote (resume points, dedup keys); it
    assigns partitions itself and never commits."""
    return kafka.consumer(kafka.reader_config(settings, "pulse-readback"))


def watermarks(consumer: ck.Consumer, tp: ck.TopicPartition) -> tuple[int, int]:
    """(low, high) offsets; retried for 15 s, e.g. while a new partition has no leader yet."""
    deadline = time.monotonic() + 15
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except ck.KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def offsets_at(consumer: ck.Consumer, parts: list[ck.TopicPartition]) -> list[ck.TopicPartition]:
    """Earliest offset at or after each partition's timestamp (``offset`` holds the time)."""
    if not parts:
        return []
    deadline = time.monotonic() + 15
    while True:
        try:
            return list(consumer.offsets_for_times(parts, timeout=10))
        except ck.KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def read_to_end(consumer: ck.Consumer, parts: list[ck.TopicPartition]) -> list[ck.Message]:
    """Every record from the given start offsets up to the high watermarks seen now.

    A start of OFFSET_BEGINNING means the log start; a negative offset from
    ``offsets_for_times`` (nothing that recent) means the partition has nothing to read.
    """
    ends: dict[tuple[str, int], int] = {}
    start: list[ck.TopicPartition] = []
    for tp in parts:
        low, high = watermarks(consumer, tp)
        offset = low if tp.offset == ck.OFFSET_BEGINNING else tp.offset
        if 0 <= offset < high:
            ends[(tp.topic, tp.partition)] = high
            start.append(ck.TopicPartition(tp.topic, tp.partition, offset))
    if not start:
        return []
    consumer.assign(start)
    out: list[ck.Message] = []
    deadline = time.monotonic() + 120
    while ends and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error():
                continue
            out.append(msg)
            topic, partition, offset = kafka.position(msg)
            if offset + 1 >= ends.get((topic, partition), 0):
                ends.pop((topic, partition), None)
    consumer.unassign()
    if ends:
        raise RuntimeError(f"could not read {sorted(ends)} to the end within 120 s")
    return out


def partitions(consumer: ck.Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        return []
    return sorted(meta.partitions)

"""Faust I/O of the signals stage: read mention batches, delegate to the pure engine, write
what it returns.

One agent reads ``pulse.mention-batches`` (written by the fan-out, :mod:`processors.fanout`):
a handful of records per fan-out batch, each carrying many mentions and the raw partitions'
progress. Per symbol partition a :class:`~processors.engine.PartitionEngine` applies them,
the changed rows go to the changelogged ``symbols`` table and the closed windows to the output
topics. Every record a batch produced is durable before its input counts as done
(:class:`Sink`). :class:`ReadGuard` and the stall checks work around faust-streaming consumer
defects that are still reachable with one agent (see docs/processors.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NoReturn

import faust
from confluent_kafka import Consumer, Producer, TopicPartition
from faust.types import TP

from pulse import kafka
from pulse.processors.engine import Batch, Outputs, PartitionEngine, partition_of_row_key
from pulse.processors.mentions import from_columns, symbol_partition
from pulse.processors.progress import ReadProgress
from pulse.processors.reading_order import Admission, ReadingOrder
from pulse.processors.watchdog import Offsets, Partition, StallWatch
from pulse.processors.windows import split_row_key
from pulse.schemas import deadletter, topics
from pulse.schemas.deadletter import Reason
from pulse.settings import Settings

STAGE = "signals"
BATCH_MAX, BATCH_WITHIN_S = 200, 0.05  # mention-batch records per agent batch
# stall watchdog (processors/watchdog.py): checks while the agent has been idle this long
STALL_CHECK_S, STALL_S, IDLE_BEFORE_CHECK_S = 5.0, 20.0, 10.0
FLUSH_WAIT_S = 10.0  # one producer flush wait; repeated while records are still in flight
CLOSED_AT_HEADER = "pulse.closed_at_ms"  # wall clock when the window closed (latency probes)
OUTPUTS = (
    topics.VOLUME,
    topics.SENTIMENT_WINDOWS,
    topics.SPIKES,
    topics.LATE_EVENTS,
    topics.DEAD_LETTER,
)
log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _exit_now(why: str, code: int) -> NoReturn:
    log.critical("%s: %s", STAGE, why)
    logging.shutdown()
    os._exit(code)


def _by_partition(events: Any) -> list[list[Any]]:
    """A batch's events split by partition, each in offset order: a partition's records and
    its transaction (exactly-once) stay together."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for event in events:
        groups.setdefault((event.message.topic, event.message.partition), []).append(event)
    return list(groups.values())


class Sink:
    """Where a batch's records go, and the one rule: durable before the input counts as done.

    At-least-once: one librdkafka producer, flushed at the end of each batch before faust
    acks the batch's events (faust's own producer costs ~50 µs of Python per record).
    Exactly-once: records are queued per input partition and sent with that partition's
    transactional id while faust's commit waits (:meth:`fence`).
    """

    def __init__(self, app: faust.App, settings: Settings, exactly_once: bool) -> None:
        self.app = app
        # flushed per batch (pulse.kafka.CLOSES: a bounded queue, a full one waits for
        # deliveries), and no Python callback for records that were delivered: only errors
        # need us
        self.producer: Producer | None = (
            None
            if exactly_once
            else kafka.producer(
                kafka.producer_config(settings, batching=kafka.CLOSES, role=STAGE, errors_only=True)
            )
        )
        self._errors: list[str] = []
        self._state: list[tuple[str, bytes, bytes | None, int]] = []
        self._pending: list[tuple[str, bytes | None, bytes | None, int | None, Any]] = []
        self._transactions: list[tuple[str, list[Any]]] = []  # (transactional id, records)
        self._commit_lock = asyncio.Lock()

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Any = None,
    ) -> None:
        if self.producer is None:
            self._pending.append((topic, key, value, partition, headers))
            return
        self._produce(topic, key, value, partition, headers)

    def send_state(self, topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        """A changelog record. At-least-once: held back until the batch's outputs are
        durable, so the state never runs ahead of what was emitted; a crash in between
        leaves the state behind and the replayed input emits the same records again.
        Exactly-once: part of the same transaction as the outputs."""
        if self.producer is None:
            self._pending.append((topic, key, value, partition, None))
        else:
            self._state.append((topic, key, value, partition))

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Any = None,
    ) -> None:
        assert self.producer is not None
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # queue full: let librdkafka send some
                # no delivery reports to serve (errors only), so poll() sleeps its whole
                # timeout: keep it short, a burst of closes refills the queue many times
                self.producer.poll(0.001)

    def end_partition(self, msg: Any) -> None:
        """Exactly-once: the records queued so far belong to the transaction of ``msg``'s
        input partition. faust would pick the transaction of the *destination* partition,
        which for an output topic is not the one that commits this input."""
        if not self._pending:
            return
        group = self.app.assignor.group_for_topic(msg.topic)
        self._transactions.append(
            (f"{self.app.conf.id}-{group}-{msg.partition}", list(self._pending))
        )
        self._pending.clear()

    async def _flush(self) -> None:
        """Outputs first, then the state they came from (see :meth:`send_state`)."""
        assert self.producer is not None
        await self._flush_producer()
        if self._state:
            self._produce_state()
            await self._flush_producer()

    def _produce_state(self) -> None:
        """Hand the held changelog records to the producer, letting go of each as it goes: an
        idle close rewrites every symbol's meta row (~1.7 KB each, ~17 MB for 10k symbols),
        and holding the list until the last one is queued would keep two copies of them."""
        state, self._state = self._state, []
        state.reverse()
        while state:
            topic, key, value, partition = state.pop()
            self._produce(topic, key, value, partition)

    async def _flush_producer(self) -> None:
        """Wait until every record sent so far is delivered. A broker outage only makes this
        wait (a flush that times out is not a failure: librdkafka retries each record until
        its ``delivery.timeout.ms``, 5 min by default, then reports it failed); a failed
        delivery ends the stage and the batch is read again."""
        assert self.producer is not None
        loop = asyncio.get_running_loop()
        waited_s = 0.0
        while True:
            left = await loop.run_in_executor(None, self.producer.flush, FLUSH_WAIT_S)
            if self._errors:
                errors, self._errors[:] = self._errors[:3], []
                raise RuntimeError(f"{left} records unsent, delivery errors: {errors}")
            if not left:
                return
            waited_s += FLUSH_WAIT_S
            log.warning(
                "%s: %d records not delivered after %.0f s (broker unreachable?): "
                "waiting; the batch is not acked before they are",
                STAGE,
                left,
                waited_s,
            )

    @contextlib.asynccontextmanager
    async def fence(self, batch: list[Any], stream: Any) -> AsyncIterator[None]:
        """Make a batch's records durable before its input counts as done.

        Exactly-once: send the records into their input partition's transaction and ack the
        events while faust's commit (offsets + transaction commit) waits: a commit in between
        would make the records visible with the input offsets still behind them, and a
        restart would emit them again (seen: a window emitted twice)."""
        if self.producer is not None:
            yield
            await self._flush()
            return
        self._fence_commits()
        async with self._commit_lock:
            yield
            transactions, self._transactions = self._transactions, []
            for tid, records in transactions:
                for topic, key, value, partition, headers in records:
                    await self.app.producer.send(
                        topic, key, value, partition, None, headers, transactional_id=tid
                    )
            for event in batch:
                if not event.message.acked:  # (events not processed are marked already)
                    await stream.ack(event)

    def _fence_commits(self) -> None:
        consumer = self.app.consumer
        if getattr(consumer, "_pulse_fenced", False):
            return
        commit = consumer.commit
        lock = self._commit_lock

        async def commit_between_batches(*args: Any, **kwargs: Any) -> Any:
            async with lock:
                return await commit(*args, **kwargs)

        # a framework patch (docs/processors.md, faust workarounds): mypy rightly flags both
        # writes; faust's consumer is patched on this one instance, once
        consumer.commit = commit_between_batches  # type: ignore[method-assign]
        consumer._pulse_fenced = True  # type: ignore[attr-defined]

    def stop_inside_batch(self) -> None:
        """A stop inside a batch: at-least-once makes its records durable first (the batch
        is complete: the only wait is the final flush); exactly-once exits without
        committing (the open transaction aborts and the batch is read again)."""
        if self.producer is not None:
            self.producer.flush(30.0)
            self._produce_state()
            self.producer.flush(30.0)
            return
        _exit_now("stopped inside a batch; its transaction is left to abort", 0)


class ReadGuard:
    """Each partition's records once and in offset order (faust can repeat or skip some after
    a rebalance, :class:`~pulse.processors.reading_order.ReadingOrder`); holes are sought
    back to."""

    def __init__(self, metrics: Any, contiguous: bool) -> None:
        self.order = ReadingOrder()
        self.metrics = metrics
        self.contiguous = contiguous  # exactly-once inputs have transaction markers (holes)
        self.started: set[Partition] = set()
        self.seeks_due: list[tuple[Partition, int]] = []

    def reset(self) -> None:
        self.order.reset()
        self.started.clear()
        self.seeks_due.clear()

    def in_order(self, events: list[Any]) -> list[Any]:
        first = events[0].message
        tp = (first.topic, first.partition)
        kept = []
        for event in events:
            msg = event.message
            verdict = self.order.admit(tp, msg.offset, contiguous=self.contiguous)
            if verdict is Admission.READ:
                kept.append(event)
                continue
            msg.acked = True  # not processed, so faust must not count it towards a commit
            if verdict is Admission.REPEAT:
                self.metrics.repeats.labels(msg.topic).inc()
                continue
            target = self.order.needs_seek(tp)
            if target is not None:
                log.error(
                    "%s[%d]: offsets %d-%d were never delivered to the agent (a consumer "
                    "defect, see processors/faust_fixes.py): reading them again",
                    msg.topic,
                    msg.partition,
                    target,
                    msg.offset - 1,
                )
                self.metrics.offset_gaps.labels(msg.topic).inc(msg.offset - target)
                self.seeks_due.append((tp, target))
        return kept

    def unknown_starts(self, batch: list[Any]) -> list[Partition]:
        return sorted({(e.message.topic, e.message.partition) for e in batch} - self.started)

    def learn_starts(self, partitions: list[Partition], found: dict[Partition, Offsets]) -> None:
        for tp in partitions:
            self.started.add(tp)
            if tp in found:
                self.order.start(tp, found[tp].start)


class Signals:
    """The signals stage's agent, stall checks and pages, attached to one faust app."""

    def __init__(self, p: Any) -> None:  # p: processors.app.Pipeline (import cycle otherwise)
        self.p = p
        self.app: faust.App = p.app
        self.m = p.metrics
        self.partitions = p.settings.symbol_partitions
        self.input_name = p.name(topics.MENTION_BATCHES)
        self.decode_batch_record = p.serde.deserializer(topics.MENTION_BATCHES)
        self.encode = {spec.name: p.serde.serializer(spec) for spec in OUTPUTS}
        self.out_names = {spec.name: p.name(spec) for spec in OUTPUTS}
        exactly_once = p.settings.processing_guarantee == "exactly_once"
        self.sink = Sink(self.app, p.settings, exactly_once)
        self.guard = ReadGuard(self.m, contiguous=not exactly_once)
        self.engines: dict[int, PartitionEngine] = {}
        self.last_batch_at = time.monotonic()
        # slack 1: a transaction's commit marker can end a partition (never a record)
        self.stall_watch = StallWatch(stall_ms=int(STALL_S * 1000), slack=1)
        self.recovery_watch = StallWatch(stall_ms=int(STALL_S * 1000))
        self._offsets_reader: Consumer | None = None
        p.extra.update(engines=self.engines)

    # --- the agent --------------------------------------------------------------------------

    def attach(self) -> None:
        app = self.app

        @app.agent(self.p.mentions_topic, name="pulse-signals")
        async def signals(stream: faust.StreamT[bytes]) -> None:
            # events are acked after their batch, so the rows written at its end are durable
            # before any of its offsets can be committed
            # faust's StreamT declares no take_events; the faust.Stream it passes has it
            batches = stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S)  # type: ignore[attr-defined]
            async for batch in batches:
                await self.guarded(self.run_batch(batch, stream))

        @app.timer(interval=STALL_CHECK_S)
        async def stall_check() -> None:
            try:
                await self.stall_check()
            except Exception as exc:  # noqa: BLE001 - a broker outage must not end the worker
                log.warning("stall check skipped: %r", exc)

        @app.on_partitions_revoked.connect
        async def forget_partitions(sender: Any, /, *revoked: Any, **kwargs: Any) -> None:
            # rebuilt lazily from the table, which faust restores before streams resume
            self.engines.clear()
            self.stall_watch.reset()
            self.guard.reset()

        self.p.readiness = self.readiness
        self.p.extra.update(signals=signals)

    async def guarded(self, batch_work: Any) -> None:
        """Run one batch. faust's ``take_events`` acks a batch's events even when the block
        fails or is cancelled, and would then commit them. So a failure ends the process at
        once (the uncommitted input is read again after the restart)."""
        try:
            await batch_work
        except asyncio.CancelledError:
            self.sink.stop_inside_batch()
            raise
        except Exception as exc:  # see above: the batch must not be acked
            log.critical("%s: batch failed", STAGE, exc_info=exc)
            _exit_now(f"batch failed: {exc!r}; exiting so its input is re-read", 70)

    async def run_batch(self, batch: list[Any], stream: Any) -> None:
        """One agent batch: in order, durable before acked, holes sought back."""
        unknown = self.guard.unknown_starts(batch)
        if unknown:
            self.guard.learn_starts(unknown, await self._broker_offsets_or_none(unknown))
        async with self.sink.fence(batch, stream):
            for events in _by_partition(batch):
                self.process_partition(events)
        while self.guard.seeks_due:
            (topic, partition), offset = self.guard.seeks_due.pop(0)
            await self.app.consumer.seek(TP(topic, partition), offset)

    def process_partition(self, events: list[Any]) -> None:
        events = self.guard.in_order(events)
        if not events:
            return
        self.last_batch_at = time.monotonic()
        last = events[-1].message
        part = last.partition
        engine = self.engine_for(part)
        self.m.events_in.labels(last.topic).inc(len(events))
        self.m.lag_ms.labels(STAGE).set(_now_ms() - last.timestamp * 1000)
        for event in events:
            self.on_event(event, engine)
        for key, row in engine.persist(part):
            self.put_row(part, key, row)
        self.sink.end_partition(last)
        self.m.watermark_ms.labels(str(part)).set(engine.watermark_ms)

    def on_event(self, event: Any, engine: PartitionEngine) -> None:
        msg = event.message
        try:
            batch = self.decode_batch(event.value)
        except Exception as exc:  # noqa: BLE001 - any undecodable input is dead-lettered
            self.dead_letter(event, Reason.DECODE_FAILED, exc)
            return
        emitted: dict[int, int] = {}
        out = Outputs(on_result=self._result_sender(msg.partition, emitted))
        engine.on_batch(batch, int(msg.timestamp * 1000), _now_ms(), msg.offset, out)
        if out.idle_close:
            log.info(
                "partition %d: every raw partition quiet, closed %d windows",
                msg.partition,
                out.closed_windows,
            )
            self.m.idle_closes.inc()
        self.m.mentions.inc(len(batch.mentions))
        for size_ms, n in emitted.items():
            self.m.windows_emitted.labels(str(size_ms)).inc(n)
        self.publish(out, msg.partition)

    def _result_sender(
        self, partition: int, emitted: dict[int, int]
    ) -> Callable[[dict[str, Any], dict[str, Any]], None]:
        """Send each closed window's records as the engine produces them (a large close is
        never held as dicts); outputs go to the partition of their symbol, which is the
        partition being read; the wall-clock close time rides in a header, so the value
        stays identical on a replay."""
        send, volume, sentiment = (
            self.sink.send,
            self.out_names[topics.VOLUME.name],
            self.out_names[topics.SENTIMENT_WINDOWS.name],
        )
        encode_volume = self.encode[topics.VOLUME.name]
        encode_sentiment = self.encode[topics.SENTIMENT_WINDOWS.name]

        def on_result(vol: dict[str, Any], sent: dict[str, Any]) -> None:
            key = vol["symbol"].encode()
            closed_at = [(CLOSED_AT_HEADER, str(_now_ms()).encode())]
            send(volume, key, encode_volume(vol), partition, closed_at)
            send(sentiment, key, encode_sentiment(sent), partition)
            size = vol["window_size_ms"]
            emitted[size] = emitted.get(size, 0) + 1

        return on_result

    def decode_batch(self, value: bytes) -> Batch:
        record = self.decode_batch_record(value)
        if record is None:
            raise ValueError("empty value")
        return Batch(
            mentions=from_columns(record),
            progress=[ReadProgress.from_avro(r) for r in record["progress"]],
            raw_partitions=record["raw_partitions"],
        )

    def engine_for(self, partition: int) -> PartitionEngine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = PartitionEngine.from_rows(
                self.p.cfg, self._rows_of(partition)
            )
        return engine

    def _rows_of(self, partition: int) -> Iterator[tuple[str, Any]]:
        for key, row in self.p.symbols.data.items():
            if not row:
                continue
            owner = partition_of_row_key(key)
            if owner is None:
                owner = symbol_partition(split_row_key(key)[0], self.partitions)
            if owner == partition:
                yield key, row

    # --- output -----------------------------------------------------------------------------

    def publish(self, out: Outputs, partition: int) -> None:
        """What the engine kept for the end of the batch: spikes and late mentions (window
        results went out as they closed, :meth:`_result_sender`)."""
        send, enc, names, m = self.sink.send, self.encode, self.out_names, self.m
        for rec in out.spikes:
            send(
                names[topics.SPIKES.name],
                rec["symbol"].encode(),
                enc[topics.SPIKES.name](rec),
                partition,
            )
            m.spikes.inc()
        for rec, kind in zip(out.late, out.late_kinds, strict=True):
            send(
                names[topics.LATE_EVENTS.name],
                rec["mention"]["symbol"].encode(),
                enc[topics.LATE_EVENTS.name](rec),
                partition,
            )
            m.late_events.labels(kind).inc()
        if out.corrections:
            m.corrections.inc(out.corrections)

    def put_row(self, partition: int, key: str, value: bytes | None) -> None:
        """Write a table row: its changelog record to ``partition``, and nothing in memory.

        The engine holds the state; the table's in-memory copy (``table.data``) is only read
        to build an engine (:meth:`engine_for`), and only after faust's recovery, which
        fills it from the changelog: from the start on a new assignment, and from where the
        last recovery stopped for a partition kept across a rebalance (so it reads these
        writes back). Keeping a copy of every write as well cost a third of the stage's memory.
        Values are the engine's encoded rows (binary pane chunks, JSON meta rows), stored by
        the table's raw codec as they are.
        """
        table = self.p.symbols
        # keys in faust's "json" codec: what its recovery decodes
        self.sink.send_state(
            table.changelog_topic.get_topic_name(), json.dumps(key).encode(), value, partition
        )

    def dead_letter(self, event: Any, reason: Reason, error: BaseException) -> None:
        msg = event.message
        stage = "decode" if reason is Reason.DECODE_FAILED else "process"
        record = deadletter.dead_letter(
            event.value,
            source=msg.topic,
            stage=stage,
            reason=reason,
            error=f"{type(error).__name__}: {error}",
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
        )
        self.sink.send(
            self.out_names[topics.DEAD_LETTER.name],
            msg.topic.encode(),
            self.encode[topics.DEAD_LETTER.name](record),
            None,
            deadletter.headers(reason, stage, msg.topic),
        )
        self.m.dead_letters.labels(reason.value).inc()

    # --- broker offsets and stall checks ----------------------------------------------------

    async def _broker_offsets_or_none(
        self, partitions: list[Partition]
    ) -> dict[Partition, Offsets]:
        """Where reading starts for partitions first read in this assignment: the group's
        commit, else the log start; asked before their first record is processed, so a first
        record beyond it is a hole."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, self.broker_offsets, partitions
            )
        except Exception as exc:  # noqa: BLE001 - then holes are only found later
            log.warning("where reading starts is unknown (%r): first records taken as read", exc)
            return {}

    def broker_offsets(self, partitions: list[Partition]) -> dict[Partition, Offsets]:
        if self._offsets_reader is None:  # reads the group's commits; never joins the group
            self._offsets_reader = kafka.consumer(
                kafka.offsets_reader_config(self.p.settings, self.app.conf.id, role=STAGE)
            )
        reader = self._offsets_reader
        found: dict[Partition, Offsets] = {}
        for tp in reader.committed([TopicPartition(t, n) for t, n in partitions], timeout=10):
            low, high = reader.get_watermark_offsets(tp, timeout=10)
            found[(tp.topic, tp.partition)] = Offsets(
                tp.offset if tp.offset >= 0 else None, low, high
            )
        return found

    def recovered(self) -> bool:
        recovery = getattr(self.app.tables, "recovery", None)
        completed = getattr(recovery, "completed", None)
        return (
            not self.app.rebalancing
            and completed is not None
            and completed.is_set()
            and bool(self.app.consumer.assignment())
        )

    def recovery_positions(self) -> dict[Partition, tuple[int, int]]:
        """Changelog partitions being restored: (next offset to apply, high watermark)."""
        recovery = getattr(self.app.tables, "recovery", None)
        if recovery is None or not recovery.in_recovery:
            return {}
        # faust keeps the last offset applied and the last offset to reach (-1: none)
        return {
            (tp.topic, tp.partition): (
                recovery.active_offsets.get(tp, -1) + 1,
                recovery.active_highwaters.get(tp, -1) + 1,
            )
            for tp in recovery.active_tps
            if tp in recovery.active_highwaters
        }

    async def stall_check(self) -> None:
        """faust-streaming #629: a partition (or a changelog partition being restored) that
        is assigned, has records waiting and is never fetched; sought to where reading
        stands, only while the agent is idle so nothing is read twice."""
        positions = self.recovery_positions()
        if positions:
            await self.seek_stalled(
                self.recovery_watch,
                positions,
                "table recovery has %d records to read and none arrived",
            )
        else:
            self.recovery_watch.reset()
        if not self.recovered() or time.monotonic() - self.last_batch_at < IDLE_BEFORE_CHECK_S:
            self.stall_watch.reset()  # busy (or rebalancing): stalls are only judged when idle
            return
        assigned = [
            (tp.topic, tp.partition)
            for tp in self.app.consumer.assignment()
            if tp.topic == self.input_name
        ]
        offsets = await asyncio.get_running_loop().run_in_executor(
            None, self.broker_offsets, assigned
        )
        positions = {tp: (self.guard.order.position(tp, o), o.high) for tp, o in offsets.items()}
        await self.seek_stalled(
            self.stall_watch, positions, "%d records waiting, none read while idle"
        )

    async def seek_stalled(
        self, watch: StallWatch, positions: dict[Partition, tuple[int, int]], what: str
    ) -> None:
        for topic, partition in watch.check(_now_ms(), positions):
            position, high = positions[(topic, partition)]
            log.warning(
                "%s[%d]: " + what + " for %.0f s: seeking it to offset %d "
                "(faust-streaming issue #629)",
                topic,
                partition,
                high - position,
                STALL_S,
                position,
            )
            self.m.stall_seeks.inc()
            await self.app.consumer.seek(TP(topic, partition), position)

    # --- health -----------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """``/readyz`` (pulse.health runs it on the worker's loop): tables recovered and
        partitions assigned."""
        return {"ready": self.recovered()}


def attach(p: Any) -> None:
    """Attach the signals agent, stall checks and rebalance hook to ``p.app``, and its
    readiness check to ``p``."""
    Signals(p).attach()

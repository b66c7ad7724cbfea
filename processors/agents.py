"""Faust I/O of the signal engine: read, delegate to the pure modules, write what they return.

Stage 1 (``fan_out``) reads the raw message and /sentiment topics, de-duplicates by message
id in the ``seen`` table and sends mentions to the symbol-keyed mentions topic. Stage 2
(``signals``) keeps one :class:`~processors.engine.PartitionEngine` per mentions partition,
persists every changed symbol row in the ``symbols`` table and sends the closed windows. The
idle timer writes a TICK record into a quiet partition, so idle closes are ordinary records
in the log: a replay after a crash closes the same windows at the same place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, NoReturn

import faust
from confluent_kafka import Consumer, Producer, TopicPartition
from faust.types import TP

from processors.engine import Outputs, PartitionEngine
from processors.mentions import (
    ExpiryQueue,
    Mention,
    MentionKind,
    Seen,
    on_message_event,
    on_sentiment_event,
    rebuild_expiry,
    tick,
)
from processors.watchdog import (
    Offsets,
    Partition,
    ReadingOrder,
    StallWatch,
    Verdict,
)
from processors.windows import split_row_key
from schemas import deadletter, topics
from schemas.deadletter import Reason

STAGE1, STAGE2 = "stage1", "stage2"
# stage 2 takes mentions in batches and writes each changed table row once per batch
BATCH_MAX, BATCH_WITHIN_S = 2_000, 0.05
# stall watchdog (processors/watchdog.py): checks while the agents have been idle this long
STALL_CHECK_S, STALL_S, IDLE_BEFORE_CHECK_S = 5.0, 20.0, 10.0
CLOSED_AT_HEADER = "pulse.closed_at_ms"  # wall clock when the window closed (latency probes)
log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _exit_now(stage: str, why: str, code: int) -> NoReturn:
    log.critical("%s: %s", stage, why)
    logging.shutdown()
    os._exit(code)


def _by_partition(events: Any) -> list[list[Any]]:
    """A batch's events split by (topic, partition), each in offset order: a partition's
    records and its transaction (exactly-once) stay together."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for event in events:
        groups.setdefault((event.message.topic, event.message.partition), []).append(event)
    return list(groups.values())


def attach(p: Any) -> None:  # p: processors.app.Pipeline (import cycle otherwise)
    """Attach agents, the idle timer, rebalance hooks and web pages to ``p.app``."""
    from processors.app import symbol_partition

    app: faust.App = p.app
    s = p.settings
    m = p.metrics
    n_symbol = s.symbol_partitions
    messages_name = p.name(topics.MESSAGES)
    mentions_name = p.name(topics.MENTIONS)
    decode_message = p.serde.deserializer(topics.MESSAGES)
    decode_sentiment = p.serde.deserializer(topics.SENTIMENT_EVENTS)
    decode_mention = p.serde.deserializer(topics.MENTIONS)
    encode: dict[str, Callable[[dict[str, Any]], bytes]] = {
        spec.name: p.serde.serializer(spec)
        for spec in (topics.MENTIONS, topics.VOLUME, topics.SENTIMENT, topics.SPIKES,
                     topics.LATE_EVENTS, topics.DEAD_LETTER)
    }
    mentions_out = p.mentions_topic
    volume_out = p.out_topics[topics.VOLUME.name]
    sentiment_out = p.out_topics[topics.SENTIMENT.name]
    spikes_out = p.out_topics[topics.SPIKES.name]
    late_out = p.out_topics[topics.LATE_EVENTS.name]
    dlq_out = p.out_topics[topics.DEAD_LETTER.name]
    ttl_ms = s.dedup_ttl_s * 1000

    expiry: dict[int, ExpiryQueue] = {}
    engines: dict[int, PartitionEngine] = {}
    last_data_offset: dict[int, int] = {}
    last_input_at: dict[int, float] = {}
    tick_sent_for: dict[int, int] = {}
    tick_producer: list[Producer] = []
    p.extra.update(engines=engines, expiry=expiry)
    last_batch_at = [time.monotonic()]  # when any batch last had records to process
    # slack 1: a transaction's commit marker can end a partition (never delivered as a record)
    stall_watch = StallWatch(stall_ms=int(STALL_S * 1000), slack=1)
    recovery_watch = StallWatch(stall_ms=int(STALL_S * 1000))
    # each partition's records once and in order (faust can repeat or skip some after a
    # rebalance); holes found are sought back to after the batch
    reading_order = ReadingOrder()
    started: set[Partition] = set()  # partitions whose reading start is known (or unknowable)
    seeks_due: list[tuple[Partition, int]] = []
    offsets_reader: list[Consumer] = []
    stream_topics = {messages_name, p.name(topics.SENTIMENT_EVENTS), mentions_name}
    exactly_once = s.processing_guarantee == "exactly_once"
    # topics without transaction markers, whose offsets a worker must read without a hole;
    # exactly-once writes the mentions transactionally (markers, aborted batches)
    contiguous = stream_topics - ({mentions_name} if exactly_once else set())
    eos_pending: list[tuple[str, bytes | None, bytes | None, int | None, Any]] = []
    eos_batches: list[tuple[str, list[Any]]] = []  # (transactional id, its records)
    commit_lock = asyncio.Lock()  # exactly-once: faust commits between batches only

    # At-least-once: every record (mentions, outputs, changelog rows, dead letters) goes
    # through one librdkafka producer, flushed at the end of each batch before the batch's
    # events are acked; faust's own producer costs ~50 µs of Python per record.
    # Exactly-once: records go through faust's transactional producer (see `drain`).
    fast: Producer | None = None if exactly_once else Producer({
        **s.kafka_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 5,
        "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000,
    })
    delivery_errors: list[str] = []
    topic_names: dict[int, str] = {}

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            delivery_errors.append(str(err))

    def send(topic: Any, key: bytes | None, value: bytes | None, partition: int | None,
             headers: Any = None) -> None:
        """Queue one record; durable before the input that caused it is acked."""
        name = topic_names.get(id(topic))
        if name is None:
            name = topic_names[id(topic)] = topic.get_topic_name()
        if fast is None:
            eos_pending.append((name, key, value, partition, headers))
            return
        kwargs: dict[str, Any] = {"on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                fast.produce(name, value, key, **kwargs)
                return
            except BufferError:  # queue full: let librdkafka send some
                fast.poll(0.05)

    async def flush_batch() -> None:
        """At-least-once: wait until every record of the batch is acknowledged (or fail the
        agent, which leaves the batch uncommitted for a replay)."""
        if fast is None:
            return
        left = await asyncio.get_running_loop().run_in_executor(None, fast.flush, 60.0)
        if left or delivery_errors:
            errors, delivery_errors[:] = delivery_errors[:3], []
            raise RuntimeError(f"{left} records unsent, delivery errors: {errors}")

    async def guarded(stage: str, batch_work: Coroutine[Any, Any, None]) -> None:
        """Run one batch. faust's ``take_events`` acks a batch's events even when the block
        fails or is cancelled, and would then commit them. So a failure ends the process at
        once (the uncommitted input is read again after the restart), and a stop inside a
        batch first makes its records durable (at-least-once: the only wait is the final
        flush, so the batch is complete) or exits without committing (exactly-once: the open
        transaction is aborted and the batch re-read)."""
        try:
            await batch_work
        except asyncio.CancelledError:
            if fast is not None:
                fast.flush(30.0)
                raise
            _exit_now(stage, "stopped inside a batch; its transaction is left to abort", 0)
        except Exception as exc:  # see above: the batch must not be acked
            log.critical("%s: batch failed", stage, exc_info=exc)
            _exit_now(stage, f"batch failed: {exc!r}; exiting so its input is re-read", 70)

    def drain(msg: Any) -> None:
        """Exactly-once: the records queued by ``msg``'s partition group belong to the
        transaction of that input partition (sent by :func:`transaction_fence`). faust
        would pick the transaction of the *destination* partition, which for a repartition
        (stage 1) or an output topic is not the one that commits this input."""
        if not eos_pending:
            return
        group = app.assignor.group_for_topic(msg.topic)
        eos_batches.append((f"{app.conf.id}-{group}-{msg.partition}", list(eos_pending)))
        eos_pending.clear()

    @contextlib.asynccontextmanager
    async def transaction_fence(batch: list[Any], stream: Any) -> AsyncIterator[None]:
        """Make a batch's records durable before its input counts as done.

        At-least-once: flush the batch's records; ``take_events`` acks the events after
        the block, so no offset is committed before its records are acknowledged.
        Exactly-once: send the records into their input partition's transaction and ack the
        events, all while faust's commit (offsets + transaction commit) waits: a commit in
        between would make the records visible with the input offsets still behind them,
        and a restart would then emit them again (seen: a window emitted twice)."""
        if fast is not None:
            yield
            await flush_batch()
            return
        fence_commits()
        async with commit_lock:
            yield
            pending = list(eos_batches)
            eos_batches.clear()
            for tid, records in pending:
                for topic_name, key, value, partition, headers in records:
                    await app.producer.send(
                        topic_name, key, value, partition, None, headers, transactional_id=tid
                    )
            for event in batch:
                if not event.message.acked:  # (events not processed are marked already)
                    await stream.ack(event)

    def fence_commits() -> None:
        consumer = app.consumer
        if getattr(consumer, "_pulse_fenced", False):
            return
        commit = consumer.commit

        async def commit_between_batches(*args: Any, **kwargs: Any) -> Any:
            async with commit_lock:
                return await commit(*args, **kwargs)

        consumer.commit = commit_between_batches
        consumer._pulse_fenced = True

    def dead_letter(event: Any, reason: Reason, stage: str, error: BaseException) -> None:
        msg = event.message
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
        send(dlq_out, msg.topic.encode(), encode[topics.DEAD_LETTER.name](record), None,
             deadletter.headers(reason, stage, msg.topic))
        m.dead_letters.labels(reason.value).inc()

    def put_row(table: Any, partition: int, key: str, row: dict[str, Any] | None) -> None:
        """Write a table row and its changelog record to ``partition``.

        Same effect as ``table[key] = row`` without faust's per-key path (eager
        partitioning, sensors, event lookup), which capped us at a few hundred writes/s.
        """
        if row is None:
            table.data.pop(key, None)
        else:
            table.data[key] = row
        # faust's "json" codec: the bytes its recovery reads back
        send(table.changelog_topic, json.dumps(key).encode(),
             None if row is None else json.dumps(row).encode(), partition)

    def expiry_for(partition: int) -> ExpiryQueue:
        queue = expiry.get(partition)
        if queue is None:
            rows = [
                (key, Seen.from_json(row))
                for key, row in p.seen.data.items()
                if row and row.get("partition") == partition
            ]
            queue = expiry[partition] = rebuild_expiry(rows, ttl_ms)
        return queue

    def engine_for(partition: int) -> PartitionEngine:
        engine = engines.get(partition)
        if engine is None:
            rows = [
                (key, row)
                for key, row in p.symbols.data.items()
                if row and symbol_partition(split_row_key(key)[0], n_symbol) == partition
            ]
            engine = engines[partition] = PartitionEngine.from_rows(p.cfg, rows)
        return engine

    def on_raw_event(event: Any) -> None:
        msg = event.message
        is_message = msg.topic == messages_name
        try:
            record = (decode_message if is_message else decode_sentiment)(event.value)
            if record is None:
                raise ValueError("empty value")
        except Exception as exc:  # noqa: BLE001 - any undecodable input is dead-lettered
            dead_letter(event, Reason.DECODE_FAILED, "decode", exc)
            return
        try:
            key = ("m" if is_message else "s") + str(record["message_id"])
            row = p.seen.data.get(key)
            seen = Seen.from_json(row) if row else None
            apply = on_message_event if is_message else on_sentiment_event
            new, mentions = apply(record, seen, msg.partition, msg.offset)
        except (KeyError, TypeError, ValueError) as exc:  # decodable but unusable
            dead_letter(event, Reason.PROCESS_FAILED, "process", exc)
            return
        queue = expiry_for(msg.partition)
        if new is not None:
            put_row(p.seen, msg.partition, key, new.to_json())
            queue.add(key, new.seen_ms)
        elif not mentions:
            m.duplicates.labels(msg.topic).inc()
        for mention in mentions:
            send(mentions_out, mention.symbol.encode(),
                 encode[topics.MENTIONS.name](mention.to_avro()),
                 symbol_partition(mention.symbol, n_symbol))
            m.mentions.labels(mention.kind.value).inc()
        horizon = queue.max_seen_ms - ttl_ms
        for old_key in queue.expired():
            old = p.seen.data.get(old_key)
            if old is not None and old["seen_ms"] < horizon:
                put_row(p.seen, msg.partition, old_key, None)
                m.dedup_expired.inc()

    @app.agent(p.raw_topic, name="pulse-fan-out")
    async def fan_out(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await guarded(STAGE1, run_batch(batch, stream, fan_out_events))

    def in_order(events: list[Any]) -> list[Any]:
        """The events of one partition that come next in its offset order (see
        :class:`~processors.watchdog.ReadingOrder`); a hole is logged, counted and queued
        for a seek back."""
        first = events[0].message
        tp = (first.topic, first.partition)
        holes_are_gaps = first.topic in contiguous
        kept = []
        for event in events:
            msg = event.message
            verdict = reading_order.admit(tp, msg.offset, contiguous=holes_are_gaps)
            if verdict is Verdict.READ:
                kept.append(event)
                continue
            # not processed, so not acked either: faust must not count it towards a commit
            msg.acked = True
            if verdict is Verdict.AHEAD:
                target = reading_order.needs_seek(tp)
                if target is not None:
                    log.error("%s[%d]: offsets %d-%d were never delivered to the agent (a "
                              "consumer defect, see processors/faust_fixes.py): reading "
                              "them again", msg.topic, msg.partition, target, msg.offset - 1)
                    m.offset_gaps.labels(msg.topic).inc(msg.offset - target)
                    seeks_due.append((tp, target))
            else:
                m.repeats.labels(msg.topic).inc()
        return kept

    async def seek_back() -> None:
        while seeks_due:
            (topic, partition), offset = seeks_due.pop(0)
            await app.consumer.seek(TP(topic, partition), offset)

    def partition_groups(batch: list[Any]) -> Iterator[tuple[list[Any], Any]]:
        """The batch by partition, in reading order (:func:`in_order`), with its last
        message."""
        for events in _by_partition(batch):
            events = in_order(events)
            if not events:
                continue
            last = events[-1].message
            last_batch_at[0] = time.monotonic()
            yield events, last

    async def learn_reading_starts(batch: list[Any]) -> None:
        """Where reading starts for the batch's partitions first read in this assignment:
        the group's commit, else the log start (auto reset "earliest"). Asked of the broker
        before their first record is processed, so a first record beyond it is a hole."""
        unknown = sorted({(e.message.topic, e.message.partition) for e in batch} - started)
        if not unknown:
            return
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                None, broker_offsets, unknown)
        except Exception as exc:  # noqa: BLE001 - then holes are only found later
            log.warning("where reading starts is unknown (%r): first records taken as read", exc)
            found = {}
        for tp in unknown:
            started.add(tp)
            if tp in found:
                reading_order.start(tp, found[tp].start)

    async def run_batch(
        batch: list[Any], stream: Any, process: Callable[[list[Any]], None]
    ) -> None:
        """One batch of either stage: in order, durable before acked, holes sought back."""
        await learn_reading_starts(batch)
        async with transaction_fence(batch, stream):
            process(batch)
        await seek_back()

    def fan_out_events(batch: list[Any]) -> None:
        for events, last in partition_groups(batch):
            for event in events:
                m.events_in.labels(event.message.topic).inc()
                on_raw_event(event)
            m.lag_ms.labels(STAGE1).set(_now_ms() - last.timestamp * 1000)
            drain(last)

    def publish(out: Outputs, partition: int) -> None:
        # outputs go to the partition of their symbol, which is the partition being read;
        # the close time rides in a header so the value stays identical on a replay
        closed_at = [(CLOSED_AT_HEADER, str(_now_ms()).encode())]
        for rec in out.volumes:
            send(volume_out, rec["symbol"].encode(), encode[topics.VOLUME.name](rec),
                 partition, closed_at)
            m.windows_emitted.labels(str(rec["window_size_ms"])).inc()
        for rec in out.sentiments:
            send(sentiment_out, rec["symbol"].encode(), encode[topics.SENTIMENT.name](rec),
                 partition)
        for rec in out.spikes:
            send(spikes_out, rec["symbol"].encode(), encode[topics.SPIKES.name](rec), partition)
            m.spikes.inc()
        for rec, kind in zip(out.late, out.late_kinds, strict=True):
            send(late_out, rec["mention"]["symbol"].encode(),
                 encode[topics.LATE_EVENTS.name](rec), partition)
            m.late_events.labels(kind).inc()
        if out.corrections:
            m.corrections.inc(out.corrections)

    def on_mention_event(event: Any, engine: PartitionEngine) -> None:
        msg = event.message
        part = msg.partition
        try:
            mention = Mention.from_avro(decode_mention(event.value))
        except Exception as exc:  # noqa: BLE001 - any undecodable input is dead-lettered
            dead_letter(event, Reason.DECODE_FAILED, "decode", exc)
            return
        trigger_ms = int(msg.timestamp * 1000)
        if mention.kind is MentionKind.TICK:
            # input resumed after the timer fired: the tick is stale, let the data decide
            if last_data_offset.get(part, mention.message_id) != mention.message_id:
                return
            out = engine.on_idle_tick(trigger_ms, msg.offset)
            log.info("idle tick on partition %d closed %d windows", part, out.closed_windows)
            if out.closed_windows:
                m.idle_closes.inc()
        else:
            last_data_offset[part] = msg.offset
            last_input_at[part] = time.monotonic()
            out = engine.on_mention(mention, trigger_ms, _now_ms(), msg.offset)
        publish(out, part)

    @app.agent(p.mentions_topic, name="pulse-signals")
    async def signals(stream: faust.StreamT[bytes]) -> None:
        # events are acked after their batch, so the rows written at its end are flushed
        # before any of its offsets can be committed
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await guarded(STAGE2, run_batch(batch, stream, signals_events))

    def signals_events(batch: list[Any]) -> None:
        for events, last in partition_groups(batch):
            part = last.partition
            engine = engine_for(part)
            m.events_in.labels(last.topic).inc(len(events))
            m.lag_ms.labels(STAGE2).set(_now_ms() - last.timestamp * 1000)
            for event in events:
                on_mention_event(event, engine)
            for key, row in engine.persist():
                put_row(p.symbols, part, key, row)
            drain(last)
            m.watermark_ms.labels(str(part)).set(engine.watermark_ms)

    @app.timer(interval=max(0.5, s.idle_close_s / 4))
    async def idle_ticks() -> None:
        now = time.monotonic()
        for part, engine in list(engines.items()):
            last = last_data_offset.get(part)
            if last is None or tick_sent_for.get(part) == last:
                continue
            if now - last_input_at.get(part, now) < s.idle_close_s or not engine.has_open():
                continue
            if not tick_producer:
                # a plain producer: in exactly-once mode a faust send outside an event would
                # sit in a transaction that only commits with new input
                tick_producer.append(Producer({**s.kafka_config(), "linger.ms": 0}))
            tick_sent_for[part] = last
            tick_producer[0].produce(
                mentions_name, value=encode[topics.MENTIONS.name](tick(last).to_avro()),
                partition=part,
            )
            tick_producer[0].poll(0)
            log.info("idle tick sent to %s[%d] after offset %d", mentions_name, part, last)

    def recovered() -> bool:
        recovery = getattr(app.tables, "recovery", None)
        completed = getattr(recovery, "completed", None)
        return (not app.rebalancing and completed is not None and completed.is_set()
                and bool(app.consumer.assignment()))

    def broker_offsets(partitions: list[Partition]) -> dict[Partition, Offsets]:
        if not offsets_reader:  # reads the group's commits; never joins the group
            offsets_reader.append(Consumer({**s.kafka_config(), "group.id": app.conf.id,
                                            "enable.auto.commit": False}))
        reader = offsets_reader[0]
        found: dict[Partition, Offsets] = {}
        for tp in reader.committed([TopicPartition(t, n) for t, n in partitions], timeout=10):
            low, high = reader.get_watermark_offsets(tp, timeout=10)
            found[(tp.topic, tp.partition)] = Offsets(
                tp.offset if tp.offset >= 0 else None, low, high)
        return found

    def recovery_positions() -> dict[Partition, tuple[int, int]]:
        """Changelog partitions being restored: (next offset to apply, high watermark)."""
        recovery = getattr(app.tables, "recovery", None)
        if recovery is None or not recovery.in_recovery:
            return {}
        # faust keeps the last offset applied and the last offset to reach (-1: none)
        return {(tp.topic, tp.partition): (recovery.active_offsets.get(tp, -1) + 1,
                                           recovery.active_highwaters.get(tp, -1) + 1)
                for tp in recovery.active_tps if tp in recovery.active_highwaters}

    async def recovery_stall_check() -> None:
        """The same fetch stall can hit a changelog partition during a table recovery, which
        then never ends (faust logs "No event received for active tp"): seek it too."""
        positions = recovery_positions()
        if not positions:
            recovery_watch.reset()
            return
        await seek_stalled(recovery_watch, positions, "table recovery has %d records to read "
                           "and none arrived")

    async def seek_stalled(
        watch: StallWatch, positions: dict[Partition, tuple[int, int]], what: str
    ) -> None:
        """Seek the partitions ``watch`` finds stalled to where their reading stands."""
        for topic, partition in watch.check(_now_ms(), positions):
            position, high = positions[(topic, partition)]
            log.warning(
                "%s[%d]: " + what + " for %.0f s: seeking it to offset %d "
                "(faust-streaming issue #629)", topic, partition, high - position, STALL_S,
                position,
            )
            m.stall_seeks.inc()
            await app.consumer.seek(TP(topic, partition), position)

    @app.timer(interval=STALL_CHECK_S)
    async def stall_check() -> None:
        await recovery_stall_check()
        if not recovered() or time.monotonic() - last_batch_at[0] < IDLE_BEFORE_CHECK_S:
            stall_watch.reset()  # busy (or rebalancing): stalls are only judged when idle
            return
        assigned = [(tp.topic, tp.partition) for tp in app.consumer.assignment()
                    if tp.topic in stream_topics]
        offsets = await asyncio.get_running_loop().run_in_executor(
            None, broker_offsets, assigned)
        positions = {tp: (reading_order.position(tp, o), o.high) for tp, o in offsets.items()}
        await seek_stalled(stall_watch, positions, "%d records waiting, none read while idle")

    @app.on_partitions_revoked.connect
    async def forget_partitions(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # rebuilt lazily from the tables, which faust restores before streams resume
        engines.clear()
        expiry.clear()
        last_data_offset.clear()
        stall_watch.reset()
        reading_order.reset()
        started.clear()
        seeks_due.clear()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(m.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = recovered()
        return web.json({"ready": ready}, status=200 if ready else 503)

    p.extra.update(fan_out=fan_out, signals=signals, idle_ticks=idle_ticks)

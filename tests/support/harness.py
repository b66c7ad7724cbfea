"""Drive a real worker from outside: raw records in, output records out.

Used by the processor integration tests and the benchmarks (``python -m bench.…``); it talks
to the real broker and registry and runs the worker as a child process
(``pulse worker``, :class:`pulse.lifecycle.Child`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from pulse import kafka
from pulse.lifecycle import Child
from pulse.schemas import topics
from pulse.schemas.serde import Serde
from pulse.schemas.topics import TopicSpec
from pulse.settings import PREFIX, Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """``PULSE_*`` variables that reproduce ``settings`` in a child process."""
    return {
        PREFIX + f.name.upper(): str(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
    }


class WorkerProcess(Child):
    """One ``pulse worker --no-prepare`` child with its log in a file: both stages (as
    ``pulse worker`` runs them), or one (``stage="fan-out"`` / ``"signals"``)."""

    def __init__(self, settings: Settings, log_path: Path, stage: str | None = None) -> None:
        env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "pulse.cli", "worker", "--no-prepare",
                *(["--stage", stage] if stage else [])]  # fmt: skip
        super().__init__(stage or "worker", argv, env=env, log_path=log_path)
        self.settings = settings
        self.stage = stage

    def log_tail(self, n: int = 60) -> str:
        return self.tail(n)


def message_event(
    message_id: int,
    created_at_ms: int,
    symbols: list[str],
    user_id: int = 1,
    sentiment: str | None = None,
    action: str = "create",
    body: bool = True,
    event_time_ms: int | None = None,
) -> dict[str, Any]:
    """A MessageEvent (message_event.avsc) as the producers write it."""
    message = None
    if body:
        message = {
            "id": message_id,
            "body": " ".join(f"${s}" for s in symbols),
            "created_at_ms": created_at_ms,
            "user": {"id": user_id, "username": f"u{user_id}"},
            "symbols": [{"symbol": s} for s in symbols],
            "sentiment": sentiment,
        }
    return {
        "action": action,
        "message_id": message_id,
        "event_time_ms": created_at_ms if event_time_ms is None else event_time_ms,
        "origin": "synthetic",
        "message": message,
    }


def sentiment_event(
    message_id: int, created_at_ms: int, symbols: list[str], score: float, user_id: int = 1
) -> dict[str, Any]:
    """A SentimentEvent (sentiment_event.avsc)."""
    return {
        "message_id": message_id,
        "user_id": user_id,
        "created_at_ms": created_at_ms,
        "sentiment_score": score,
        "symbols": [{"symbol": s} for s in symbols],
    }


class RawWriter:
    """Avro-encodes raw events and produces them keyed by message id."""

    def __init__(self, settings: Settings, serde: Serde | None = None) -> None:
        self.settings = settings
        self.serde = serde or Serde(settings)
        # written as the producers write them (idempotent, lz4, STREAM batching)
        self.producer = kafka.producer(
            kafka.producer_config(settings, batching=kafka.STREAM, role="test-writer")
        )
        self._enc = {
            spec.name: self.serde.serializer(spec)
            for spec in (topics.MESSAGES, topics.RAW_SENTIMENT)
        }

    def send(self, spec: TopicSpec, record: dict[str, Any]) -> None:
        self.send_bytes(spec, str(record["message_id"]).encode(), self._enc[spec.name](record))

    def send_bytes(self, spec: TopicSpec, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(spec.full_name(self.settings), value, key)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self) -> None:
        left = self.producer.flush(60)
        if left:
            raise RuntimeError(f"{left} raw records not delivered")


def read_records(
    settings: Settings,
    spec: TopicSpec,
    *,
    expected: int | None = None,
    idle_s: float = 5.0,
    timeout_s: float = 60.0,
    read_committed: bool = True,
) -> list[dict[str, Any]]:
    """Decoded values of ``spec`` from the beginning: stop at ``expected`` records, or when
    nothing new came for ``idle_s`` seconds, or at ``timeout_s``."""
    decode = Serde(settings).deserializer(spec)
    consumer = kafka.consumer(kafka.reader_config(settings, "read", read_committed=read_committed))
    consumer.subscribe([spec.full_name(settings)])
    out: list[dict[str, Any]] = []
    start = last = time.monotonic()
    try:
        while time.monotonic() - start < timeout_s:
            if expected is not None and len(out) >= expected:
                break
            if expected is None and out and time.monotonic() - last > idle_s:
                break
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(decode(msg.value()))
            last = time.monotonic()
    finally:
        consumer.close()
    return out


def fanned_out(settings: Settings) -> bool:
    """The fan-out has read, written and committed every raw record written so far."""
    from pulse.processors.fanout import group_id

    consumer = kafka.consumer(kafka.offsets_reader_config(settings, group_id(settings)))
    try:
        parts = [
            TopicPartition(spec.full_name(settings), n)
            for spec in (topics.MESSAGES, topics.RAW_SENTIMENT)
            for n in range(spec.partitions(settings))
        ]
        try:
            for tp in consumer.committed(parts, timeout=10):
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high > low and tp.offset < high:
                    return False
        except KafkaException:  # a coordinator moving after a broker restart: not yet
            return False
        return True
    finally:
        consumer.close()


def wait_fanned_out(settings: Settings, timeout_s: float = 60.0) -> None:
    """Block until :func:`fanned_out` (a barrier between phases of a scripted input)."""
    if not wait_until(lambda: fanned_out(settings), timeout_s):
        raise TimeoutError(f"the fan-out did not catch up within {timeout_s:.0f} s")


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False

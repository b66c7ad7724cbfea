"""``pulse tail TOPIC``: print a topic decoded to JSON lines (Avro values via the registry)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition

from pulse import kafka
from pulse.consumers.kafka_errors import ReaderErrors, ReaderFailed, partitions_of
from pulse.consumers.records import Meta, json_line, key_text, quiet_http_logs
from pulse.lifecycle import Stop, stop_on_signals
from pulse.schemas.serde import Serde
from pulse.schemas.topics import by_name
from pulse.settings import Settings


@dataclass(frozen=True)
class TailOptions:
    """Which records ``pulse tail`` prints, and when it stops.

    :param keys: only records with one of these keys (empty: all).
    :param max_records: stop after this many (0: never).
    :param idle_exit_s: stop after this long without a new record (0: never).
    """

    from_beginning: bool = False
    keys: frozenset[str] = frozenset()
    max_records: int = 0
    idle_exit_s: float = 0.0
    value_only: bool = False


def run(
    settings: Settings, topic: str, options: TailOptions = TailOptions(), out: TextIO | None = None
) -> int:
    """Print ``topic`` (with or without the prefix) as JSON lines until stopped; exit code."""
    try:
        spec = by_name(topic, settings)
    except KeyError as exc:
        print(f"pulse tail: {exc.args[0]}", file=sys.stderr)
        return 2
    quiet_http_logs()
    errors = ReaderErrors("pulse tail")
    # tail assigns its partitions itself and moves nobody's offsets; each connection failure
    # is logged through error_cb, once (quiet: not again by librdkafka)
    consumer = kafka.consumer(
        kafka.reader_config(settings, "pulse-tail", role="tail"),
        error_cb=errors.on_error,
        quiet=True,
    )
    tail = _Tail(options, spec.full_name(settings), Serde(settings).deserializer(spec), errors)
    # Ctrl-C / SIGTERM end the loop at its next turn (≤ 0.5 s), wherever the signal lands
    # (a KeyboardInterrupt raised inside a client callback can be lost)
    try:
        with stop_on_signals(tail.stop):
            tail.run(consumer, out or sys.stdout)
    except ReaderFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    except BrokenPipeError:  # `pulse tail … | head`
        sys.stderr.close()
    finally:
        consumer.close()
    return 0


class _Tail:
    """The reading loop of ``pulse tail``: transient broker errors are logged and ridden out."""

    def __init__(
        self,
        options: TailOptions,
        topic: str,
        decode: Callable[[bytes], Any],
        errors: ReaderErrors,
    ) -> None:
        self.options, self.topic, self.decode, self.errors = options, topic, decode, errors
        self.printed = 0
        self.stop = Stop()

    def run(self, consumer: Consumer, out: TextIO) -> None:
        self._assign(consumer)
        last_seen = time.monotonic()
        limit = self.options.max_records
        while not self.stop and (not limit or self.printed < limit):
            self.errors.check()
            msg = consumer.poll(0.5)
            if msg is None:
                idle_exit_s = self.options.idle_exit_s
                if idle_exit_s and time.monotonic() - last_seen > idle_exit_s:
                    break
                continue
            last_seen = time.monotonic()
            if (err := msg.error()) is not None:
                self.errors.on_error(err, msg.topic())
                continue
            self.errors.ok()
            self._print(msg, out)

    def _assign(self, consumer: Consumer) -> None:
        """Every partition of the topic, at its start or its end; waits out a broker that is
        not reachable yet or a topic being created, up to the errors' limits."""
        while (parts := partitions_of(consumer, [self.topic], self.errors)) is None:
            if self.stop:
                return
            self.errors.check()
            time.sleep(0.5)
        start = OFFSET_BEGINNING if self.options.from_beginning else OFFSET_END
        consumer.assign([TopicPartition(p.topic, p.partition, start) for p in parts])

    def _print(self, msg: Message, out: TextIO) -> None:
        key = key_text(msg.key())
        if self.options.keys and key not in self.options.keys:
            return
        line = _render(msg, key, self.decode, self.options.value_only)
        if line is None:
            return
        out.write(line + "\n")
        out.flush()
        self.printed += 1


def _render(
    msg: Message, key: str | None, decode: Callable[[bytes], Any], value_only: bool
) -> str | None:
    ts_type, ts = msg.timestamp()
    meta = Meta(*kafka.position(msg), ts if ts_type else None, key)
    raw = msg.value()
    try:
        value = None if raw is None else decode(raw)
    except Exception as exc:  # noqa: BLE001 - a reader shows what it cannot decode, and goes on
        print(f"pulse tail: {meta.topic}[{meta.partition}]@{meta.offset}: cannot decode: {exc}",
              file=sys.stderr)  # fmt: skip
        return None
    return json_line(meta, value, value_only=value_only)

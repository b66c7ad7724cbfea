"""``pulse tail TOPIC``: print a topic decoded to JSON lines (Avro values via the registry)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition

from pulse.consumers.kafka_errors import ReaderErrors, ReaderFailed, partitions_of
from pulse.consumers.records import Meta, json_line, key_text, quiet_http_logs
from pulse.schemas.serde import Serde
from pulse.schemas.topics import ALL, by_name
from pulse.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    known = ", ".join(spec.name for spec in ALL)
    p = argparse.ArgumentParser(
        prog="pulse tail",
        description="Print a topic's records as JSON lines: "
        '{"topic","partition","offset","timestamp_ms","key","value"}.',
        epilog=f"Topics (the configured PULSE_TOPIC_PREFIX is added): {known}",
    )
    p.add_argument("topic", help="topic name, with or without the prefix")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record (default: only new records)",
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="print only records with this key (repeatable), e.g. --key AAPL",
    )
    p.add_argument("--max", type=int, default=0, metavar="N", help="stop after N records")
    p.add_argument(
        "--idle-exit",
        type=float,
        default=0.0,
        metavar="S",
        help="stop after S seconds without a new record (default: never)",
    )
    p.add_argument("--value-only", action="store_true", help="print only the decoded value")
    return p  # fmt: skip


def main(settings: Settings, argv: list[str], out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = by_name(args.topic, settings)
    except KeyError as exc:
        print(f"pulse tail: {exc.args[0]}", file=sys.stderr)
        return 2
    quiet_http_logs()
    errors = ReaderErrors("pulse tail")
    consumer = Consumer(
        {
            **settings.kafka_config(),
            # required by the client, but never joined nor committed: tail assigns its
            # partitions itself and moves nobody's offsets
            "group.id": f"pulse-tail-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "error_cb": errors.on_error,
            "log_level": 2,  # each connection failure is logged through error_cb, once
        }
    )
    tail = _Tail(args, spec.full_name(settings), Serde(settings).deserializer(spec), errors)
    # Ctrl-C / SIGTERM end the loop at its next turn (≤ 0.5 s), wherever the signal lands
    # (a KeyboardInterrupt raised inside a client callback can be lost)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, tail.request_stop)
    try:
        tail.run(consumer, out or sys.stdout)
    except ReaderFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `pulse tail … | head`
        sys.stderr.close()
    finally:
        consumer.close()
    return 0


class _Tail:
    """The reading loop of ``pulse tail``: transient broker errors are logged and ridden out."""

    def __init__(
        self,
        args: argparse.Namespace,
        topic: str,
        decode: Callable[[bytes], Any],
        errors: ReaderErrors,
    ) -> None:
        self.args, self.topic, self.decode, self.errors = args, topic, decode, errors
        self.keys = set(args.key)
        self.printed = 0
        self.stopping = False

    def request_stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self, consumer: Consumer, out: TextIO) -> None:
        self._assign(consumer)
        last_seen = time.monotonic()
        while not self.stopping and (not self.args.max or self.printed < self.args.max):
            self.errors.check()
            msg = consumer.poll(0.5)
            if msg is None:
                if self.args.idle_exit and time.monotonic() - last_seen > self.args.idle_exit:
                    break
                continue
            last_seen = time.monotonic()
            if msg.error():
                self.errors.on_error(msg.error(), msg.topic())
                continue
            self.errors.ok()
            self._print(msg, out)

    def _assign(self, consumer: Consumer) -> None:
        """Every partition of the topic, at its start or its end; waits out a broker that is
        not reachable yet or a topic being created, up to the errors' limits."""
        while (parts := partitions_of(consumer, [self.topic], self.errors)) is None:
            if self.stopping:
                return
            self.errors.check()
            time.sleep(0.5)
        start = OFFSET_BEGINNING if self.args.from_beginning else OFFSET_END
        consumer.assign([TopicPartition(p.topic, p.partition, start) for p in parts])

    def _print(self, msg: Message, out: TextIO) -> None:
        key = key_text(msg.key())
        if self.keys and key not in self.keys:
            return
        line = _render(msg, key, self.decode, self.args.value_only)
        if line is None:
            return
        out.write(line + "\n")
        out.flush()
        self.printed += 1


def _render(
    msg: Message, key: str | None, decode: Callable[[bytes], Any], value_only: bool
) -> str | None:
    ts_type, ts = msg.timestamp()
    meta = Meta(msg.topic(), msg.partition(), msg.offset(), ts if ts_type else None, key)
    raw = msg.value()
    try:
        value = None if raw is None else decode(raw)
    except Exception as exc:  # noqa: BLE001 - a reader shows what it cannot decode, and goes on
        print(f"pulse tail: {meta.topic}[{meta.partition}]@{meta.offset}: cannot decode: {exc}",
              file=sys.stderr)  # fmt: skip
        return None
    return json_line(meta, value, value_only=value_only)

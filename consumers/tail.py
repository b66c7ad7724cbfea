"""``pulse tail TOPIC``: print a topic decoded to JSON lines (Avro values via the registry)."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaError, Message

from consumers.records import Meta, json_line, key_text, quiet_http_logs
from schemas.serde import Serde
from schemas.topics import ALL, by_name
from settings import Settings


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
    out = out or sys.stdout
    try:
        spec = by_name(args.topic, settings)
    except KeyError as exc:
        print(f"pulse tail: {exc.args[0]}", file=sys.stderr)
        return 2
    quiet_http_logs()
    topic = spec.full_name(settings)
    decode = Serde(settings).deserializer(spec)
    keys = set(args.key)
    consumer = Consumer(
        {
            **settings.kafka_config(),
            # a group of its own, never committed: tailing must not move anyone's offsets
            "group.id": f"pulse-tail-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        }
    )
    consumer.subscribe([topic])
    printed = 0
    last_seen = time.monotonic()
    try:
        while not args.max or printed < args.max:
            msg = consumer.poll(0.5)
            if msg is None:
                if args.idle_exit and time.monotonic() - last_seen > args.idle_exit:
                    break
                continue
            last_seen = time.monotonic()
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"pulse tail: {msg.error()}", file=sys.stderr)
                continue
            key = key_text(msg.key())
            if keys and key not in keys:
                continue
            line = _render(msg, key, decode, args.value_only)
            if line is None:
                continue
            out.write(line + "\n")
            out.flush()
            printed += 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `pulse tail … | head`
        sys.stderr.close()
    finally:
        consumer.close()
    return 0


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

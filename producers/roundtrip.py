"""Prove the contracts end to end: upstream JSON → record → registry Avro → Kafka → record.

``pulse roundtrip FILE…`` runs it on captured files (REST API v2 responses or Firehose JSONL).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulse import kafka
from pulse.producers import parse
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde
from pulse.settings import Settings


@dataclass
class RoundTrip:
    sent: int = 0
    received: int = 0
    mismatched: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.sent == self.received and not self.mismatched


def load_file(path: Path) -> tuple[list[parse.Parsed], list[str]]:
    """Parsed records of one captured file, and a note for each item that did not parse."""
    raw = path.read_bytes()
    stripped = raw.lstrip()
    if stripped.startswith(b"{") and b"\n{" in stripped.rstrip():  # JSON lines (Firehose capture)
        items, rejected = [], []
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    items.append(parse.firehose_event(line))
                except parse.ParseError as exc:
                    rejected.append(f"{path}:{n}: {exc}")
        return items, rejected
    page = parse.rest_stream(raw, origin="replay")
    return page.items, [f"{path}: {r.error}" for r in page.rejected]


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=repr)


def roundtrip(
    settings: Settings, items: Iterable[parse.Parsed], timeout_s: float = 60
) -> RoundTrip:
    """Send every item through Kafka under its topic's registered schema and compare what
    comes back, per topic and key (records of one key keep their order)."""
    items = list(items)
    specs = {p.spec for p in items}
    ensure_topics(settings, specs)
    serde = Serde(settings)
    result = RoundTrip()
    sent: dict[tuple[str, str], list[str]] = defaultdict(list)
    # written as the producers write (pulse.kafka.STREAM), read back as committed
    producer = kafka.producer(
        kafka.producer_config(settings, batching=kafka.STREAM, role="roundtrip")
    )
    for spec, key, record in items:
        topic = spec.full_name(settings)
        producer.produce(topic, serde.encode(spec, record), key.encode())
        producer.poll(0)
        sent[(topic, key)].append(_canonical(record))
        result.sent += 1
    if producer.flush(30):
        raise RuntimeError("round trip: records still undelivered after 30 s")

    by_topic = {spec.full_name(settings): spec for spec in specs}
    consumer = kafka.consumer(kafka.reader_config(settings, "roundtrip", role="roundtrip"))
    consumer.subscribe(list(by_topic))
    got: dict[tuple[str, str], list[str]] = defaultdict(list)
    deadline = time.monotonic() + timeout_s
    try:
        while result.received < result.sent and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            topic, _, _ = kafka.position(msg)
            raw_key, value = msg.key(), msg.value()
            if raw_key is None or value is None:
                raise ValueError(f"round trip: a record without key or value in {topic}")
            decoded = serde.decode(by_topic[topic], value)
            got[(topic, raw_key.decode())].append(_canonical(decoded))
            result.received += 1
    finally:
        consumer.close()
    for where, values in sent.items():
        if got.get(where) != values:
            result.mismatched.append(f"{where[0]} key {where[1]}")
    return result


def run(settings: Settings, files: list[str]) -> int:
    items: list[parse.Parsed] = []
    rejected: list[str] = []
    for name in files:
        got, bad = load_file(Path(name))
        items += got
        rejected += bad
    for note in rejected:
        print(f"rejected: {note}")
    started = time.monotonic()
    result = roundtrip(settings, items)
    topics = sorted({p.spec.full_name(settings) for p in items})
    elapsed = time.monotonic() - started
    print(f"{result.sent} records sent to {', '.join(topics)}; {result.received} read back and")
    print(f"decoded in {elapsed:.1f}s; {len(result.mismatched)} differ")
    for where in result.mismatched[:20]:
        print(f"  differs: {where}")
    return 0 if result.ok else 1

"""Producer throughput on one core: (a) parse + Avro-encode + produce, (b) pre-encoded produce.

(a) takes the path the Firehose producer takes: the native fast path (``producers.native``)
where it is installed, the Python path for what it defers; the pure-Python (a) is printed too,
and (a) once more through the Firehose client's own event handler (seq_id headers, resume
tracking). Input: synthetic Firehose JSON lines (``producers.synthetic``), generated before timing.
Output: the local broker from ``PULSE_BOOTSTRAP_SERVERS`` / ``PULSE_SCHEMA_REGISTRY_URL``,
into throwaway topics under a ``bench-<time>.`` prefix. Run:

    PULSE_BOOTSTRAP_SERVERS=127.0.0.1:19092 \\
    PULSE_SCHEMA_REGISTRY_URL=http://127.0.0.1:18081/apis/ccompat/v7 \\
    python -m bench.producers_bench --count 200000
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable

from pulse.producers import native, parse
from pulse.producers.firehose import STREAM, FirehoseClient
from pulse.producers.publish import Publisher
from pulse.producers.sse import SseEvent
from pulse.producers.synthetic import Config, Generator, envelopes
from pulse.schemas.admin import ensure_topics
from pulse.schemas.topics import DEAD_LETTER, MESSAGES
from pulse.settings import Settings


def rate(label: str, n: int, nbytes: int, seconds: float) -> float:
    """Print the throughput; returns µs per event."""
    print(
        f"{label:<44} {n / seconds:>10,.0f} msg/s {nbytes / seconds / 1e6:>8.1f} MB/s "
        f"{seconds / n * 1e6:>6.1f} µs/event ({n:,} in {seconds:.2f}s)"
    )
    return seconds / n * 1e6


def timed(
    label: str, run: Callable[[], None], publisher: Publisher, n: int, nbytes: int
) -> tuple[float, float, float]:
    """Run one (a) variant of ``n`` events until every record is acknowledged; returns µs
    per event: wall, this thread's CPU, librdkafka's threads' CPU."""
    t, cpu_main, cpu_all = time.perf_counter(), time.thread_time(), time.process_time()
    run()
    assert publisher.flush(120) == 0
    took = time.perf_counter() - t
    cpu_main, cpu_all = time.thread_time() - cpu_main, time.process_time() - cpu_all
    us = 1e6 / n
    return rate(label, n, nbytes, took), cpu_main * us, (cpu_all - cpu_main) * us


def parts(
    lines: list[bytes], in_bytes: int, encode: Callable[[dict], bytes], header: bytes
) -> tuple[float, float, float]:
    """Each part alone, for insight (no Kafka); nothing kept alive, as in the real path."""
    t = time.perf_counter()
    for line in lines:
        parse.firehose_event(line)
    us_parse = rate("parse only", len(lines), in_bytes, time.perf_counter() - t)
    sample = [parse.firehose_event(line).record for line in lines[:20_000]]
    t = time.perf_counter()
    for record in sample:
        encode(record)
    us_encode = rate("Avro encode only (20k sample)", len(sample), 0, time.perf_counter() - t)
    del sample
    us_native = 0.0
    fast = native.firehose_message
    if fast is not None:
        t = time.perf_counter()
        deferred = sum(fast(line, header) is None for line in lines)
        took = time.perf_counter() - t
        us_native = rate("native parse + encode only", len(lines), in_bytes, took)
        print(f"{'':<44} {deferred:,} deferred to the Python path")
    else:
        print("native fast path not installed (pip install ./native): (a) is the Python path")
    return us_parse, us_encode, us_native


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=200_000)
    p.add_argument("--core", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    args = p.parse_args()
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})  # the process, librdkafka's threads included
    settings = Settings.from_env(topic_prefix=f"bench-{int(time.time())}.")
    ensure_topics(settings, (MESSAGES, DEAD_LETTER))

    print(f"generating {args.count:,} synthetic Firehose events …", flush=True)
    lines = list(
        itertools.islice(envelopes(iter(Generator(Config(), 1_656_460_800_000))), args.count)
    )
    in_bytes = sum(map(len, lines))
    print(
        f"input: {in_bytes / 1e6:.1f} MB of JSON, {in_bytes / len(lines):.0f} B/event; "
        f"pinned to core {args.core}; broker {settings.bootstrap_servers}\n"
    )

    publisher = Publisher(settings, "bench")
    encode = publisher.encoder(MESSAGES)
    topic = publisher.topic(MESSAGES)
    header = publisher.header(MESSAGES)
    fast = native.firehose_message

    us_parse, us_encode, us_native = parts(lines, in_bytes, encode, header)

    def full_path() -> None:  # as FirehoseClient._handle, minus seq headers and tracking
        publish, publish_value = publisher.publish, publisher.publish_value
        for line in lines:
            done = fast(line, header) if fast is not None else None
            if done is None:
                publish(parse.firehose_event(line))
            else:
                publish_value(MESSAGES, str(done[0]).encode(), done[2])

    def python_path() -> None:
        for line in lines:
            publisher.publish(parse.firehose_event(line))

    def firehose_client() -> None:
        client = FirehoseClient(settings, STREAM, publisher)
        for line in lines:
            client._handle(SseEvent(line))

    # (a) the full path: upstream JSON bytes → parse → Avro → produce, until all acknowledged;
    # CPU time of this thread vs the whole process tells Python's share from librdkafka's
    label = "native" if fast is not None else "Python"
    n = (publisher, len(lines), in_bytes)
    us_a, main, threads = timed(f"(a) parse + Avro-encode + produce, {label}", full_path, *n)
    if fast is not None:
        timed("(a) the same, pure-Python path", python_path, *n)
    timed("(a) via the Firehose client (+ seq, resume)", firehose_client, *n)

    # (b) the client's own limit: pre-encoded values, produce + delivery reports
    values = [encode(parse.firehose_event(line).record) for line in lines]
    out_bytes = sum(map(len, values))
    producer = publisher.producer
    keys = [str(900_000_000 + i).encode() for i in range(len(values))]
    t = time.perf_counter()
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(120) == 0
    rate("(b) produce pre-encoded Avro (acked)", len(values), out_bytes, time.perf_counter() - t)
    print(
        f"\nAvro value: {out_bytes / len(values):.0f} B/event; delivery errors: "
        f"{publisher.failed}; topic {topic}"
    )
    # where (a)'s time per event went; the stages as measured alone above, so "the rest" is
    # publish + produce() + delivery callbacks + what running them interleaved costs
    stages = (
        f"native parse+encode {us_native:.1f}"
        if fast is not None
        else f"parse {us_parse:.1f} + encode {us_encode:.1f}"
    )
    rest = main - (us_native if fast is not None else us_parse + us_encode)
    print(
        f"(a) per event: {us_a:.1f} µs wall = {main:.1f} µs this thread [{stages} + the rest "
        f"{rest:.1f}] + {threads:.1f} µs librdkafka's threads + {us_a - main - threads:.1f} µs "
        f"not this process (broker, other work, steal)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fan-out stage alone against a bare consume + decode loop over the same raw topic.

    PULSE_BOOTSTRAP_SERVERS=… PULSE_SCHEMA_REGISTRY_URL=… \\
        python -m bench.fanout_bench --messages 200000 --symbols 10000

Pre-loads N synthetic MessageEvents (1-2 Zipf-chosen symbols each) over the default 6 raw
partitions of a fresh topic prefix; times (1) a bare confluent-kafka consume + Avro decode +
per-symbol count loop and (2) processors.fanout.FanOut in this process, from its first record
read to the last one written and committed. Prints msgs/s of both and the ratio; ``--profile``
adds a cProfile of the fan-out run. The bare loop decodes each whole record with fastavro; the
fan-out reads only the fields that become mentions, natively when ``native/`` is built
(processors/message_reader.py), so it can outrun the bare loop.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import threading
import time
import uuid
from collections import Counter

from pulse import kafka
from pulse.processors.fanout import FanOut
from pulse.processors.message_reader import native_available
from pulse.schemas import topics
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde
from pulse.settings import Settings
from tests.support.harness import RawWriter, message_event

T0 = 1_767_225_600_000


def preload(settings: Settings, n: int, n_symbols: int, rate_per_s: float) -> None:
    rng = random.Random(7)
    names = [f"S{i:05d}" for i in range(n_symbols)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(n_symbols)]
    writer = RawWriter(settings)
    for i in range(n):
        syms = list(dict.fromkeys(rng.choices(names, weights, k=1 + (rng.random() < 0.5))))
        sentiment = rng.choice((None, None, "Bullish", "Bearish"))
        writer.send(
            topics.MESSAGES,
            message_event(
                i + 1, T0 + int(i * 1000 / rate_per_s), syms, rng.randrange(1, 50_000), sentiment
            ),
        )
    writer.flush()


def bare_loop(settings: Settings, n: int) -> float:
    """consume(10k) + Avro decode + per-symbol count: msgs/s from the first record."""
    decode = Serde(settings).deserializer(topics.MESSAGES)
    consumer = kafka.consumer(kafka.reader_config(settings, "bare", role="bench"))
    consumer.subscribe([topics.MESSAGES.full_name(settings)])
    counts: Counter[str] = Counter()
    seen, start = 0, None
    while seen < n:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error():
                continue
            if start is None:
                start = time.perf_counter()
            for ref in decode(msg.value())["message"]["symbols"]:
                counts[ref["symbol"]] += 1
            seen += 1
    consumer.close()
    return n / (time.perf_counter() - (start or time.perf_counter()))


def fan_out(settings: Settings, n: int, profile: bool) -> float:
    """FanOut in this process: msgs/s from its first record read to all N committed."""
    fo = FanOut(settings, instance_id="bench")
    stop = threading.Event()
    marks: dict[str, float] = {}

    def events() -> float:
        return (
            fo.metrics.registry.get_sample_value(
                "pulse_fanout_events_in_total", {"topic": topics.MESSAGES.full_name(settings)}
            )
            or 0.0
        )

    def watch() -> None:
        while not stop.is_set():
            got = events()
            if got and "first" not in marks:
                marks["first"], marks["first_n"] = time.perf_counter(), got
            if got >= n:
                marks["end"] = time.perf_counter()
                stop.set()
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    fo.run(stop)
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    fo.close()
    return (n - marks["first_n"]) / (marks["end"] - marks["first"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--symbols", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=2_000.0, help="event-time msgs/s")
    ap.add_argument("--guarantee", default="at_least_once")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    settings = Settings.from_env().replace(
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", processing_guarantee=args.guarantee
    )
    ensure_topics(
        settings,
        (topics.MESSAGES, topics.RAW_SENTIMENT, topics.MENTION_BATCHES, topics.DEAD_LETTER),
    )
    t = time.perf_counter()
    preload(settings, args.messages, args.symbols, args.rate)
    print(
        f"preloaded {args.messages} messages in {time.perf_counter() - t:.1f} s "
        f"(prefix {settings.topic_prefix})"
    )
    bare = bare_loop(settings, args.messages)
    print(f"bare consume+decode+count: {bare:,.0f} msgs/s")
    fo = fan_out(settings, args.messages, args.profile)
    print(
        f"fan-out ({args.guarantee}): {fo:,.0f} msgs/s = {100 * fo / bare:.1f} % of the bare loop"
    )
    reader = "native" if native_available() else "fastavro (native/ not installed)"
    print(f"the fan-out's message reader: {reader}")


if __name__ == "__main__":
    main()

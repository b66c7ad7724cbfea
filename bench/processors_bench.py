"""Benchmark of the signal engine against the real broker (prints numbers; not a test).

    PULSE_BOOTSTRAP_SERVERS=… PULSE_SCHEMA_REGISTRY_URL=… \\
        python bench/processors_bench.py --messages 500000 --symbols 10000

1. pre-loads N synthetic MessageEvents (~1.5 symbols each) into a fresh raw topic;
2. times a bare confluent-kafka consume + Avro decode + count loop over it (the Python
   ceiling), and a no-op faust agent that only counts the records (faust's own ceiling);
3. runs one worker (``python -m processors``) over the same backlog and times raw messages/s
   and mentions/s until the consumer group has committed everything, samples the latency
   from window close (header ``pulse.closed_at_ms``) to the output record being consumable,
   and reads the worker's peak RSS.

``--engine-only`` times the pure stage-2 engine in-process (no Kafka), which tells the cost of
our own code apart from faust's. ``--spike-scan`` replays the real histories through the
spike detector and prints alerts per day for a few thresholds (how the defaults were chosen).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from processors import spikes  # noqa: E402
from processors.agents import BATCH_MAX, CLOSED_AT_HEADER  # noqa: E402
from processors.app import prepare, window_config  # noqa: E402
from processors.engine import PartitionEngine  # noqa: E402
from processors.harness import RawWriter, WorkerProcess, message_event  # noqa: E402
from processors.mentions import Mention, MentionKind  # noqa: E402
from schemas import topics  # noqa: E402
from schemas.serde import Serde  # noqa: E402
from settings import Settings  # noqa: E402

HISTORY = ROOT.parent / "shared" / "data" / "stocktwits-real" / "anshulrao-stocktwits-crawler" \
    / "history"


def synthetic(n: int, n_symbols: int, seed: int = 7, rate_per_s: float = 2_000.0):
    """(message_id, created_at_ms, symbols, user_id, sentiment) with Zipf-ish symbol choice."""
    rng = random.Random(seed)
    names = [f"S{i:05d}" for i in range(n_symbols)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(n_symbols)]
    cum = list(_accumulate(weights))
    t0 = 1_767_225_600_000
    for i in range(n):
        k = 1 if rng.random() < 0.5 else 2
        syms = list(dict.fromkeys(rng.choices(names, cum_weights=cum, k=k)))
        sentiment = rng.choice((None, None, "Bullish", "Bearish"))
        yield i + 1, t0 + int(i * 1000 / rate_per_s), syms, rng.randrange(1, 50_000), sentiment


def _accumulate(xs: list[float]) -> list[float]:
    out, total = [], 0.0
    for x in xs:
        total += x
        out.append(total)
    return out


def preload(settings: Settings, n: int, n_symbols: int, rate_per_s: float) -> int:
    writer = RawWriter(settings)
    mentions = 0
    for mid, t, syms, user, sentiment in synthetic(n, n_symbols, rate_per_s=rate_per_s):
        writer.send(topics.MESSAGES, message_event(mid, t, syms, user, sentiment))
        mentions += len(syms)
    writer.flush()
    return mentions


def bare_loop(settings: Settings, n: int) -> float:
    """confluent-kafka consume + Avro decode + per-symbol count: messages/s."""
    decode = Serde(settings).deserializer(topics.MESSAGES)
    consumer = Consumer({**settings.kafka_config(), "group.id": f"bare-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topics.MESSAGES.full_name(settings)])
    counts: Counter[str] = Counter()
    seen, start = 0, None
    while seen < n:
        batch = consumer.consume(1_000, 1.0)
        for msg in batch:
            if msg.error():
                continue
            if start is None:
                start = time.perf_counter()
            record = decode(msg.value())
            for ref in record["message"]["symbols"]:
                counts[ref["symbol"]] += 1
            seen += 1
    consumer.close()
    return n / (time.perf_counter() - (start or time.perf_counter()))


def faust_noop(settings: Settings, n: int) -> float:
    """Events/s of a no-op faust agent over the same topic: faust's own per-event ceiling."""
    env = {**os.environ, "NOOP_BROKER": settings.bootstrap_servers.split(",")[0],
           "NOOP_TOPIC": topics.MESSAGES.full_name(settings), "NOOP_COUNT": str(n),
           "NOOP_DATADIR": tempfile.mkdtemp(prefix="faust-noop-")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "faust_noop.py"), "worker", "-l", "warn"],
        env=env, capture_output=True, text=True, timeout=3_600, check=False,
    )
    found = re.search(r"faust-noop (\d+)", out.stdout + out.stderr)  # faust logs stdout
    if found:
        return float(found.group(1))
    raise RuntimeError(f"faust no-op run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def committed_total(settings: Settings, group: str, topic: str, partitions: int) -> int:
    c = Consumer({**settings.kafka_config(), "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        c.close()


def latency_probe(settings: Settings, stop: threading.Event, out: list[float]) -> None:
    """Tail the volume topic; close → consumable latency (ms) of each record."""
    consumer = Consumer({**settings.kafka_config(), "group.id": f"lat-{uuid.uuid4().hex}",
                         "auto.offset.reset": "latest", "enable.auto.commit": False})
    consumer.subscribe([topics.VOLUME.full_name(settings)])
    while not stop.is_set():
        for msg in consumer.consume(500, 0.5):
            if msg.error():
                continue
            headers = dict(msg.headers() or [])
            if CLOSED_AT_HEADER in headers:
                out.append(time.time() * 1000 - int(headers[CLOSED_AT_HEADER]))
    consumer.close()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_worker(settings: Settings, n: int, mentions: int, log: Path) -> dict[str, float]:
    raw = topics.MESSAGES.full_name(settings)
    ment = topics.MENTIONS.full_name(settings)
    stop = threading.Event()
    latencies: list[float] = []
    probe = threading.Thread(target=latency_probe, args=(settings, stop, latencies), daemon=True)
    probe.start()
    worker = WorkerProcess(settings, log).start()
    assert worker.proc is not None
    started = time.perf_counter()
    first = raw_done = ment_done = None
    peak = 0.0
    try:
        while True:
            time.sleep(1.0)
            if not worker.alive():
                raise RuntimeError(f"worker died:\n{worker.log_tail()}")
            peak = max(peak, peak_rss_mb(worker.proc.pid))
            r = committed_total(settings, settings.app_id, raw, settings.raw_partitions)
            m = committed_total(settings, settings.app_id, ment, settings.symbol_partitions)
            now = time.perf_counter()
            if first is None and r > 0:
                first = now
            if raw_done is None and r >= n:
                raw_done = now
            if ment_done is None and m >= mentions:
                ment_done = now
            if raw_done and ment_done:
                break
            if now - started > 3_600:
                raise RuntimeError("benchmark did not finish within an hour")
        time.sleep(2)
        peak = max(peak, peak_rss_mb(worker.proc.pid))
    finally:
        stop.set()
        worker.stop()
    assert first is not None and raw_done is not None and ment_done is not None
    busy = max(raw_done, ment_done) - first
    lat = sorted(latencies) or [float("nan")]
    return {
        "raw_per_s": n / busy,
        "mentions_per_s": mentions / busy,
        "seconds": busy,
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "latency_samples": len(latencies),
        "peak_rss_mb": peak,
    }


def engine_only(n: int, n_symbols: int) -> None:
    cfg = window_config(Settings())
    engine = PartitionEngine(cfg)
    mentions = [
        Mention(MentionKind.MESSAGE, s, mid, t, user, sentiment)
        for mid, t, syms, user, sentiment in synthetic(n, n_symbols)
        for s in syms
    ]
    start = time.perf_counter()
    for i, m in enumerate(mentions):
        engine.on_mention(m, i, 0)
        if i % BATCH_MAX == BATCH_MAX - 1:  # the worker writes changed rows once per batch
            for _, row in engine.persist():
                json.dumps(row)
    took = time.perf_counter() - start
    print(f"pure engine: {len(mentions) / took:,.0f} mentions/s ({len(mentions):,} mentions, "
          f"{n_symbols:,} symbols, windows {Settings().windows} + {Settings().hopping_windows})")


def spike_scan() -> None:
    by_symbol: dict[str, list[int]] = {}
    for path in sorted(HISTORY.glob("*.csv*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="", encoding="utf-8") as f:  # type: ignore[operator]
            for row in csv.DictReader(f):
                t = datetime.strptime(row["created_at"], "%Y-%m-%dT%H:%M:%SZ")
                by_symbol.setdefault(path.name.split("_")[0].split(".")[0], []).append(
                    int(t.replace(tzinfo=UTC).timestamp() * 1000))
    print("symbol  msgs   days   per-5m | spikes/day on 5-min windows (z / min count)")
    for symbol, ts in sorted(by_symbol.items()):
        days = (max(ts) - min(ts)) / 86_400_000
        cells = []
        for z, min_count in ((3.0, 5), (3.0, 10), (4.0, 5), (4.0, 10), (5.0, 10)):
            rule = spikes.SpikeRule(min_count=min_count, z=z)
            counts = Counter(t - t % 300_000 for t in ts)
            baseline = spikes.Baseline()
            fired = sum(
                spikes.observe(baseline, start, 300_000, counts[start], rule).fired
                for start in sorted(counts)
            )
            cells.append(f"z{z:g}/m{min_count}: {fired / days:5.2f}")
        print(f"{symbol:6} {len(ts):6} {days:6.1f} {len(ts) / days / 288:6.2f} | "
              + "  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--symbols", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, default=2_000.0,
                        help="event-time messages per second of the synthetic stream: decides "
                        "how many windows close during the run (every window is 2 records)")
    parser.add_argument("--engine-only", action="store_true")
    parser.add_argument("--spike-scan", action="store_true")
    args = parser.parse_args()
    if args.spike_scan:
        spike_scan()
        return
    if args.engine_only:
        engine_only(args.messages, args.symbols)
        return
    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env().replace(
        topic_prefix=f"bench{tag}.", app_id=f"pulse-bench-{tag}",
        raw_partitions=args.partitions, symbol_partitions=args.partitions,
        state_dir=tempfile.mkdtemp(prefix="pulse-bench-"), log_level="WARNING",
        idle_close_s=3.0,
    )
    prepare(settings)
    t = time.perf_counter()
    mentions = preload(settings, args.messages, args.symbols, args.rate)
    print(f"pre-loaded {args.messages:,} raw messages ({mentions:,} mentions, "
          f"{args.symbols:,} symbols, {args.messages / args.rate / 60:.0f} min of event time) "
          f"in {time.perf_counter() - t:.1f}s")
    bare = bare_loop(settings, args.messages)
    print(f"bare confluent-kafka consume + Avro decode + count: {bare:,.0f} msgs/s")
    noop = faust_noop(settings, args.messages)
    print(f"faust no-op agent (counts records, nothing else): {noop:,.0f} events/s")
    r = run_worker(settings, args.messages, mentions, Path(settings.state_dir) / "worker.log")
    print(f"worker: {r['raw_per_s']:,.0f} raw msgs/s, {r['mentions_per_s']:,.0f} mentions/s "
          f"({r['seconds']:.1f}s to commit all input of both stages)")
    print(f"ratio to the bare loop: {r['raw_per_s'] / bare:.1%}; to faust's no-op agent: "
          f"{r['raw_per_s'] / noop:.1%} (the worker reads each message and, in stage 2, "
          f"each of its {mentions / args.messages:.2f} mentions)")
    print(f"window close → consumable output: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms "
          f"({r['latency_samples']:,} samples)")
    print(f"worker peak RSS: {r['peak_rss_mb']:.0f} MB with {args.symbols:,} symbols")


if __name__ == "__main__":
    main()

"""Benchmark of the v2 pipeline (``pulse worker``: fan-out + signals) against a real broker.

    PULSE_BOOTSTRAP_SERVERS=… PULSE_SCHEMA_REGISTRY_URL=… \\
        .venv/bin/python -m bench.processors_bench --messages 500000 --symbols 10000

1. pre-loads N synthetic MessageEvents (1-2 Zipf-chosen symbols each, ``--rate`` event-time
   messages/s, or ``--day``: N spread over 24 h) into the raw topic of a fresh topic prefix,
   with every other setting at its default (6 raw and 6 symbol partitions, windows, grace,
   idle close), and computes from the input how many volume records the windows must give;
2. times the bare confluent-kafka consume + Avro decode + count loop over that topic
   (``bench/fanout_bench.py``'s: the loop a user would write, fastavro decoding each whole
   record; the fan-out reads only the fields it needs, natively when ``native/`` is built);
3. starts ``pulse worker`` (supervisor + fan-out + signals processes) over the backlog and
   follows both stages' /metrics until every expected volume record was emitted; samples the
   RSS of the worker's process tree from /proc meanwhile.

Time: from the fan-out's first record read to the last volume record appended, minus the time
the pipeline only waited for the idle-close timer (from the later of "every mention applied"
and the last window emitted before it, to when the fan-out wrote the all-quiet marks). Latency:
``pulse.closed_at_ms`` (stamped as the signals stage publishes a close) to the record's
broker append time (the bench's volume topic uses LogAppendTime): close → durable, and readable
under at-least-once (exactly-once adds the wait for the transaction's commit marker).

``--profile`` attaches py-spy (``pip install py-spy``) to both stage processes and prints where
each spends its time; ``--engine-only`` drives the pure engine
(``PartitionEngine.on_batch``) over the same input in-process, without Kafka.
The old ``--spike-scan`` is gone: ``bench/evaluate.py`` scores the detectors as they run now.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from bench.fanout_bench import T0, bare_loop
from pulse import kafka
from pulse.processors.agents import CLOSED_AT_HEADER
from pulse.processors.app import window_config
from pulse.processors.batching import BatchBuilder, columns
from pulse.processors.engine import Batch, PartitionEngine
from pulse.processors.fanout import BATCH_SIZE
from pulse.processors.mentions import from_columns
from pulse.processors.message_reader import native_available
from pulse.processors.progress import ReadProgress
from pulse.processors.windows import WindowSpec
from pulse.processors.worker import prepare
from pulse.schemas import topics
from pulse.schemas.serde import Serde
from pulse.settings import Settings
from tests.support.harness import RawWriter, WorkerProcess, message_event

DAY_S = 86_400
Event = tuple[int, int, list[str], int, str | None]  # id, created_at_ms, symbols, user, label


# --- input -----------------------------------------------------------------------------------


def synthetic(n: int, n_symbols: int, rate_per_s: float, seed: int = 7) -> Iterator[Event]:
    """The stream of ``fanout_bench.preload`` (same seed, same draws), as tuples."""
    rng = random.Random(seed)
    names = [f"S{i:05d}" for i in range(n_symbols)]
    cum = list(accumulate(1.0 / (i + 1) ** 0.8 for i in range(n_symbols)))
    for i in range(n):
        k = 1 + (rng.random() < 0.5)
        syms = list(dict.fromkeys(rng.choices(names, cum_weights=cum, k=k)))
        sentiment = rng.choice((None, None, "Bullish", "Bearish"))
        yield i + 1, T0 + int(i * 1000 / rate_per_s), syms, rng.randrange(1, 50_000), sentiment


@dataclass
class Expected:
    """What the input must give: one volume record per symbol per window holding a mention."""

    messages: int
    mentions: int
    span_ms: int
    volumes_by_spec: dict[str, int]

    @property
    def volumes(self) -> int:
        return sum(self.volumes_by_spec.values())


def windows_with_data(panes: dict[str, set[int]], specs: tuple[WindowSpec, ...]) -> dict[str, int]:
    """Per window spec, how many (symbol, window) pairs hold at least one pane with data."""
    out = {}
    for spec in specs:
        total = 0
        for starts in panes.values():
            lasts = {p - p % spec.advance_ms for p in starts}
            held = set()
            for last in lasts:
                held.update(range(last - spec.size_ms + spec.advance_ms, last + 1, spec.advance_ms))
            total += len(held)
        out[spec.key] = total
    return out


@dataclass
class Tally:
    """Counts the input as it is generated, for :class:`Expected`."""

    pane_ms: int
    specs: tuple[WindowSpec, ...]
    messages: int = 0
    mentions: int = 0
    last_ms: int = T0
    panes: dict[str, set[int]] = field(default_factory=dict)

    def add(self, t: int, syms: list[str]) -> None:
        for s in syms:
            self.panes.setdefault(s, set()).add(t - t % self.pane_ms)
        self.messages += 1
        self.mentions += len(syms)
        self.last_ms = max(self.last_ms, t)

    def expected(self) -> Expected:
        return Expected(
            self.messages,
            self.mentions,
            self.last_ms - T0,
            windows_with_data(self.panes, self.specs),
        )


def tally_for(settings: Settings) -> Tally:
    cfg = window_config(settings)
    return Tally(cfg.pane_ms, cfg.specs)


def preload(settings: Settings, n: int, n_symbols: int, rate_per_s: float) -> Expected:
    writer, tally = RawWriter(settings), tally_for(settings)
    for mid, t, syms, user, sentiment in synthetic(n, n_symbols, rate_per_s):
        writer.send(topics.MESSAGES, message_event(mid, t, syms, user, sentiment))
        tally.add(t, syms)
    writer.flush()
    return tally.expected()


# --- the worker's process tree and metrics ---------------------------------------------------


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out.extend(int(c) for c in task.read_text().split())
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children(p))
    return pids


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def stage_of(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    if b"pulse.processors.supervisor" in cmd:  # (its argv names the stages it runs)
        return "supervisor"
    for name in (b"fan-out", b"signals"):
        if name in cmd:
            return name.decode()
    return "other"


METRIC_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})? (\S+)$")


def scrape(port: int) -> dict[str, float]:
    """Sum of every sample by metric name from ``/metrics`` on ``port`` ({} while down)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


@dataclass
class Timeline:
    """Wall-clock marks (time.time()) seen while following the worker."""

    first_read: float | None = None  # the fan-out read its first raw record
    signals_first: float | None = None  # the signals stage applied its first mention
    fanned_out: float | None = None  # the fan-out read every raw record
    applied: float | None = None  # the signals stage applied every mention
    windows_done: float | None = None  # every expected volume record emitted
    peak_rss_kb: int = 0  # peak of the sampled sum over the process tree
    hwm_kb: dict[str, int] = field(default_factory=dict)  # VmHWM by process, at the end
    pids: dict[str, int] = field(default_factory=dict)  # stage → pid


STALL_S = 60.0  # beyond the idle close: no new window for this long means none will come


@dataclass
class Stall:
    """Tells when a count stopped growing for ``after_s`` seconds."""

    after_s: float
    last: float = -1.0
    since: float = field(default_factory=time.monotonic)

    def stuck(self, value: float) -> bool:
        if value != self.last:
            self.last, self.since = value, time.monotonic()
        return time.monotonic() - self.since > self.after_s


def follow(
    settings: Settings, worker: WorkerProcess, exp: Expected, timeout_s: float, on_stage: Any = None
) -> Timeline:
    """Poll both stages' metrics and the process tree until every window was emitted."""
    assert worker.proc is not None
    tl, deadline = Timeline(), time.monotonic() + timeout_s
    stall = Stall(settings.idle_close_s + STALL_S)
    while tl.windows_done is None:
        time.sleep(0.02 if tl.first_read is None else 0.25)
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done in {timeout_s:.0f} s:\n{worker.log_tail()}")
        sample_tree(worker.proc.pid, tl, on_stage)
        sig = scrape(settings.web_port)
        mark(tl, scrape(settings.fan_out_port), sig, exp)
        emitted = sig.get("pulse_windows_emitted_total", 0.0)
        if tl.applied is not None and stall.stuck(emitted):
            raise RuntimeError(
                f"{emitted:,.0f} of {exp.volumes:,} windows emitted, no more for "
                f"{stall.after_s:.0f} s:\n{worker.log_tail()}"
            )
    for pid in tree(worker.proc.pid):
        tl.hwm_kb[f"{stage_of(pid)} ({pid})"] = status_kb(pid, "VmHWM")
    return tl


def sample_tree(root: int, tl: Timeline, on_stage: Any) -> None:
    pids = tree(root)
    tl.peak_rss_kb = max(tl.peak_rss_kb, sum(status_kb(p, "VmRSS") for p in pids))
    for pid in pids:
        stage = stage_of(pid)
        if stage in ("fan-out", "signals") and tl.pids.get(stage) != pid:
            tl.pids[stage] = pid
            if on_stage is not None:
                on_stage(stage, pid)


def mark(tl: Timeline, fan: dict[str, float], sig: dict[str, float], exp: Expected) -> None:
    now = time.time()
    read = fan.get("pulse_fanout_events_in_total", 0.0)
    applied = sig.get("pulse_mentions_in_total", 0.0)
    if tl.first_read is None and read > 0:
        tl.first_read = now
    if tl.signals_first is None and applied > 0:
        tl.signals_first = now
    if tl.fanned_out is None and read >= exp.messages:
        tl.fanned_out = now
    if tl.applied is None and applied >= exp.mentions:
        tl.applied = now
    if sig.get("pulse_windows_emitted_total", 0.0) >= exp.volumes:
        tl.windows_done = now


# --- reading the outputs after the run -------------------------------------------------------


def read_all(
    settings: Settings, spec: topics.TopicSpec, expected: int | None, idle_s: float = 5.0
) -> list[Any]:
    """Every record of ``spec`` from the beginning (stop at ``expected`` or ``idle_s`` idle)."""
    consumer = kafka.consumer(kafka.reader_config(settings, "bench", role="bench"))
    consumer.subscribe([spec.full_name(settings)])
    out: list[Any] = []
    last = time.monotonic()
    try:
        while (expected is None or len(out) < expected) and time.monotonic() - last < idle_s:
            got = [m for m in consumer.consume(10_000, 0.5) if not m.error()]
            if got:
                out.extend(got)
                last = time.monotonic()
    finally:
        consumer.close()
    return out


@dataclass(frozen=True)
class Latency:
    closed_at_ms: int  # header: when the signals stage published the close
    partition: int
    ms: int  # broker append time − closed_at_ms


def close_latencies(records: list[Any]) -> list[Latency]:
    out = []
    for msg in records:
        headers = dict(msg.headers() or [])
        if CLOSED_AT_HEADER in headers:
            closed = int(headers[CLOSED_AT_HEADER])
            out.append(Latency(closed, msg.partition(), msg.timestamp()[1] - closed))
    return out


BURST = 1_000  # windows closed by one mention batch: live traffic closes a few at a time


def quiet_written_ms(settings: Settings) -> int | None:
    """When the fan-out wrote the first mention batch saying every raw partition is quiet."""
    decode = Serde(settings).deserializer(topics.MENTION_BATCHES)
    quiet = [
        msg.timestamp()[1]
        for msg in read_all(settings, topics.MENTION_BATCHES, None, 3.0)
        if all(p["quiet"] for p in decode(msg.value())["progress"])
    ]
    return min(quiet) if quiet else None


def use_log_append_time(settings: Settings, spec: topics.TopicSpec) -> None:
    """The broker stamps each record as it appends it (the bench's own topic only)."""
    entry = ConfigEntry(
        "message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(
        ResourceType.TOPIC, spec.full_name(settings), incremental_configs=[entry]
    )
    admin = quiet_admin(settings)  # kept referenced until the answer
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def quiet_admin(settings: Settings) -> AdminClient:
    # no librdkafka lines (e.g. when it is closed): a failure surfaces from its futures
    return kafka.admin(kafka.admin_config(settings, role="bench"), quiet=True)


def delete_bench_topics(settings: Settings) -> None:
    admin = quiet_admin(settings)
    names = [
        t
        for t in admin.list_topics(timeout=30).topics
        if t.startswith((settings.topic_prefix, settings.app_id))
    ]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(60)
        except Exception as exc:  # noqa: BLE001 - cleanup is best effort
            print(f"(could not delete a bench topic: {exc})")


# --- py-spy ----------------------------------------------------------------------------------


class Profiler:
    """py-spy (raw collapsed stacks) on each stage process until it exits."""

    def __init__(self, out_dir: Path) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        self.exe = str(exe) if exe.exists() else shutil.which("py-spy")
        if self.exe is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out_dir = out_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def attach(self, stage: str, pid: int) -> None:
        assert self.exe is not None
        out = self.out_dir / f"{stage}.txt"
        self.procs[stage] = subprocess.Popen(
            [
                self.exe,
                "record",
                "--nonblocking",
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                str(out),
                "-p",
                str(pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def report(self, top: int = 15) -> None:
        for stage, proc in self.procs.items():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(10)
            path = self.out_dir / f"{stage}.txt"
            if path.exists():
                print_profile(stage, path.read_text().splitlines(), top)


FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
OUR_CODE = re.compile(r"\((processors|schemas|producers)/")
ENTRY = re.compile(r"^(<module>|main|run) ")  # the entry points: every sample is under them


def _frame(text: str) -> str:
    m = FRAME.match(text)
    if not m:
        return text
    return f"{m.group(1)} ({'/'.join(m.group(2).split('/')[-2:])})"


def print_profile(stage: str, lines: list[str], top: int) -> None:
    """Self and inclusive shares of py-spy's samples, per function."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # first: process/thread
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    ours = Counter({f: n for f, n in incl.items() if OUR_CODE.search(f) and not ENTRY.match(f)})
    print(f"\n--- py-spy, {stage}: {total:,} samples (100/s, busy threads) ---")
    for title, counts in (("self", own), ("inclusive (our code)", ours)):
        print(f"  top {top} by {title} time:")
        for name, n in counts.most_common(top):
            print(f"    {100 * n / max(total, 1):5.1f} %  {name}")


# --- the pipeline run ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_settings(guarantee: str) -> Settings:
    """Defaults everywhere (partitions, windows, grace, idle close) but names and ports."""
    tag = uuid.uuid4().hex[:8]
    return Settings.from_env().replace(
        topic_prefix=f"bench{tag}.",
        app_id=f"pulse-bench-{tag}",
        state_dir=tempfile.mkdtemp(prefix="pulse-bench-"),
        web_port=free_port(),
        fan_out_port=free_port(),
        processing_guarantee=guarantee,
    )


@dataclass
class Result:
    tl: Timeline
    work_s: float  # first record read → last window, minus the idle-timer wait
    total_s: float  # first record read → last window appended
    wait_s: float  # of which only waiting for the idle close timer
    latencies: list[Latency]
    quiet_ms: int | None
    volumes_read: int


def run_pipeline(
    settings: Settings, exp: Expected, profile: Profiler | None, timeout_s: float
) -> Result:
    worker = WorkerProcess(settings, Path(settings.state_dir) / "worker.log").start()
    try:
        tl = follow(settings, worker, exp, timeout_s, profile.attach if profile else None)
    finally:
        worker.stop()
    assert tl.first_read is not None and tl.applied is not None
    volumes = read_all(settings, topics.VOLUME, exp.volumes)
    lat = close_latencies(volumes)
    last_ms = max(m.timestamp()[1] for m in volumes)
    quiet = quiet_written_ms(settings)
    wait_ms = 0.0
    if quiet is not None:
        before = [m.timestamp()[1] for m in volumes if m.timestamp()[1] < quiet]
        busy_until = max([tl.applied * 1000, *before])
        wait_ms = max(0.0, quiet - busy_until)
    total_s = last_ms / 1000 - tl.first_read
    return Result(tl, total_s - wait_ms / 1000, total_s, wait_ms / 1000, lat, quiet, len(volumes))


def pct(xs: list[int], q: float) -> float:
    return float(xs[min(len(xs) - 1, int(len(xs) * q))])


def print_latency(r: Result) -> None:
    """Close → append, for all windows and split by how many one batch closed at once (one
    publish stamps one ``closed_at`` on all of them, and they queue behind each other)."""
    bursts = Counter((x.partition, x.closed_at_ms) for x in r.latencies)
    groups = {
        "all closes": [x.ms for x in r.latencies],
        f"closes of ≤ {BURST:,} windows per batch": [
            x.ms for x in r.latencies if bursts[x.partition, x.closed_at_ms] <= BURST
        ],
        f"closes of > {BURST:,}": [
            x.ms for x in r.latencies if bursts[x.partition, x.closed_at_ms] > BURST
        ],
    }
    for name, xs in groups.items():
        if not xs:
            print(f"  window close → appended, {name}: none")
            continue
        xs.sort()
        print(
            f"  window close → appended, {name}: p50 {statistics.median(xs):,.0f} ms, "
            f"p99 {pct(xs, 0.99):,.0f} ms, max {xs[-1]:,} ms ({len(xs):,} records)"
        )
    print(
        f"  ({len(bursts):,} closing batches; the largest closed {max(bursts.values()):,} "
        "windows of one symbol partition at once)"
    )


def print_result(exp: Expected, bare: float, r: Result) -> None:
    tl = r.tl
    assert tl.first_read is not None and tl.fanned_out and tl.applied
    rate = exp.messages / r.work_s
    print(
        f"pipeline: {rate:,.0f} raw msgs/s, {exp.mentions / r.work_s:,.0f} mentions/s "
        f"({r.work_s:.1f} s from the first record read to the last window, without "
        f"{r.wait_s:.1f} s spent only waiting for the idle close; {r.total_s:.1f} s in all)"
    )
    print(f"ratio pipeline / bare loop: {rate / bare:.1%} (target ≥ 50 %)")
    reader = "native" if native_available() else "fastavro (native/ not installed)"
    print(f"  the fan-out's message reader: {reader}")
    fan_s = max(tl.fanned_out - tl.first_read, 0.02)  # within one poll for a tiny input
    print(
        f"  fan-out read everything after {fan_s:.1f} s "
        f"({exp.messages / fan_s:,.0f} msgs/s); the signals stage "
        f"applied its first mention after {(tl.signals_first or 0) - tl.first_read:.1f} s and "
        f"the last after {tl.applied - tl.first_read:.1f} s"
    )
    print(
        f"volume records: {r.volumes_read:,} read, {exp.volumes:,} expected "
        f"({', '.join(f'{k} {v:,}' for k, v in exp.volumes_by_spec.items())})"
    )
    print_latency(r)
    hwm = ", ".join(f"{k} {v / 1024:.0f}" for k, v in tl.hwm_kb.items())
    print(
        f"peak RSS of the worker's processes: {tl.peak_rss_kb / 1024:.0f} MB sampled sum "
        f"(target ≤ 400 MB); per-process peaks (VmHWM, MB): {hwm}; their sum "
        f"{sum(tl.hwm_kb.values()) / 1024:.0f} MB"
    )


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def pipeline_bench(args: argparse.Namespace) -> None:
    settings = bench_settings(args.guarantee)
    prepare(settings)
    ok = False
    try:
        measure(settings, args)
        ok = True
    finally:
        if not args.keep:
            delete_bench_topics(settings)
        if ok and not args.keep:
            shutil.rmtree(settings.state_dir, ignore_errors=True)
        else:
            print(f"(worker log and state: {settings.state_dir})")


def measure(settings: Settings, args: argparse.Namespace) -> None:
    use_log_append_time(settings, topics.VOLUME)
    print(f"load average before: {loadavg()}")
    t = time.perf_counter()
    exp = preload(settings, args.messages, args.symbols, args.rate)
    print(
        f"pre-loaded {exp.messages:,} raw messages ({exp.mentions:,} mentions, "
        f"{args.symbols:,} symbols, {exp.span_ms / 60_000:,.1f} min of event time, "
        f"{settings.raw_partitions} raw / {settings.symbol_partitions} symbol partitions, "
        f"prefix {settings.topic_prefix}) in {time.perf_counter() - t:.1f} s"
    )
    bare = bare_loop(settings, args.messages)
    print(f"bare confluent-kafka consume + Avro decode + count: {bare:,.0f} msgs/s")
    profile = Profiler(Path(settings.state_dir)) if args.profile else None
    r = run_pipeline(settings, exp, profile, args.timeout)
    print_result(exp, bare, r)
    print(f"load average after: {loadavg()}")
    if profile:
        profile.report()


# --- the pure engine alone -------------------------------------------------------------------


def engine_batches(
    n: int, n_symbols: int, rate: float, settings: Settings, tally: Tally, batch: int = BATCH_SIZE
) -> list[tuple[int, Batch]]:
    """What the fan-out would write: per ``batch`` raw messages (round-robin over the raw
    partitions), one Batch per symbol partition; then one all-quiet Batch each (idle close)."""
    raw_n, raw_name = settings.raw_partitions, topics.MESSAGES.full_name(settings)
    offsets, event_ms = [0] * raw_n, [-1] * raw_n
    builder, out = BatchBuilder(settings.symbol_partitions), []

    def flush(idle: bool) -> None:
        marks = [
            ReadProgress(raw_name, p, offsets[p], event_ms[p], idle, idle) for p in range(raw_n)
        ]
        for p, rows in enumerate(builder.rows):
            out.append((p, Batch(from_columns(columns(rows)), marks, raw_n)))
        builder.clear()

    for i, (mid, t, syms, user, sentiment) in enumerate(synthetic(n, n_symbols, rate)):
        builder.add_message(message_event(mid, t, syms, user, sentiment))
        tally.add(t, syms)
        offsets[i % raw_n] += 1
        event_ms[i % raw_n] = t
        if i % batch == batch - 1:
            flush(False)
    flush(False)
    flush(True)
    return out


@dataclass
class EngineRun:
    expected: Expected
    batches: int
    seconds: float
    persist_s: float  # of which persist(), the rows encoded
    volumes: int = 0
    late: int = 0
    spikes: int = 0


def run_engine(
    messages: int, symbols: int, rate: float, prof: cProfile.Profile | None = None
) -> EngineRun:
    """Drive one PartitionEngine per symbol partition as the signals stage would (decoded
    batches in, outputs and changed rows out), without Kafka or Avro."""
    settings = Settings()  # the defaults, no broker needed
    cfg = window_config(settings)
    tally = tally_for(settings)
    batches = engine_batches(messages, symbols, rate, settings, tally)
    engines = {p: PartitionEngine(cfg) for p in range(settings.symbol_partitions)}
    run = EngineRun(tally.expected(), len(batches), 0.0, 0.0)
    if prof:
        prof.enable()
    start = time.perf_counter()
    for offset, (p, batch) in enumerate(batches):
        now_ms = int(time.time() * 1000)
        out = engines[p].on_batch(batch, now_ms, now_ms, offset)
        run.volumes += len(out.volumes)
        run.late += len(out.late)
        run.spikes += len(out.spikes)
        t = time.perf_counter()
        engines[p].persist(p)  # the rows the signals stage writes (already encoded)
        run.persist_s += time.perf_counter() - t
    run.seconds = time.perf_counter() - start
    if prof:
        prof.disable()
    return run


def engine_only(args: argparse.Namespace) -> None:
    prof = cProfile.Profile() if args.profile else None
    r = run_engine(args.messages, args.symbols, args.rate, prof)
    exp = r.expected
    print(
        f"pure engine: {exp.messages / r.seconds:,.0f} raw msgs/s = "
        f"{exp.mentions / r.seconds:,.0f} mentions/s ({r.seconds:.1f} s, of which persist"
        f" {r.persist_s:.1f} s; {r.batches:,} batches, {r.volumes:,} windows closed of "
        f"{exp.volumes:,} expected, {r.late} late, {r.spikes} spikes)"
    )
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--symbols", type=int, default=10_000)
    ap.add_argument(
        "--rate",
        type=float,
        default=2_000.0,
        help="event-time messages per second of the synthetic stream",
    )
    ap.add_argument(
        "--day",
        action="store_true",
        help="spread the messages over 24 h of event time (the backfill case)",
    )
    ap.add_argument("--guarantee", default="at_least_once")
    ap.add_argument(
        "--engine-only", action="store_true", help="the pure engine in-process, no Kafka"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy both stages (pipeline) or cProfile (--engine-only)",
    )
    ap.add_argument("--timeout", type=float, default=3_600.0)
    ap.add_argument("--keep", action="store_true", help="keep the bench's topics")
    args = ap.parse_args()
    if args.day:
        args.rate = args.messages / DAY_S
    if args.engine_only:
        engine_only(args)
    else:
        pipeline_bench(args)


if __name__ == "__main__":
    main()

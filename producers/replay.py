"""Replay captured Stocktwits data into Kafka: Firehose JSONL, REST JSON responses, history CSV.

Files are read whole, their events merged and ordered by event time, duplicates (the same
message in overlapping REST polls) dropped, then published as fast as possible or at ×N real
time with the original gaps. Formats are recognised by content:

- a JSON document with ``messages`` (or a JSON list of messages): a REST API v2 response;
- one JSON object per line (optionally ``data: `` prefixed, as captured from SSE): Firehose
  envelopes, or ``/sentiment`` items when lines carry ``sentiment_score``;
- CSV (``.csv``/``.csv.gz``): the flattened history format (see :func:`parse.history_row`).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pulse.lifecycle import Stop, stop_on_signals
from pulse.producers import metrics, parse
from pulse.producers.parse import Parsed, ParseError
from pulse.producers.publish import Publisher
from pulse.schemas.topics import DEAD_LETTER, MESSAGES
from pulse.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One replayable input: a record, or the raw bytes and error of one that failed."""

    time_ms: int
    parsed: Parsed | None
    raw: bytes
    error: ParseError | None = None


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _event_time(p: Parsed) -> int:
    rec = p.record
    return int(rec.get("event_time_ms") or rec.get("created_at_ms") or rec.get("time_ms") or 0)


def _mark_replay(p: Parsed) -> Parsed:
    if p.spec is MESSAGES:
        p.record["origin"] = "replay"
    return p


def _bad(raw: bytes, exc: ParseError) -> Item:
    return Item(0, None, raw, exc)


def items_of_file(path: Path) -> Iterator[Item]:
    """Every replayable item of one file (unordered)."""
    data = _read(path)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        yield from _csv_items(data, default_symbol=_symbol_of(path))
        return
    try:
        doc = parse.loads(data, max_bytes=len(data))
    except ParseError:
        doc = None  # not one JSON document: JSON lines
    if isinstance(doc, list) or (isinstance(doc, dict) and "messages" in doc):
        page = parse.rest_stream(doc, origin="replay")
        for p in page.items:
            yield Item(_event_time(p), p, b"")
        for r in page.rejected:
            yield _bad(r.raw, r.error)
        return
    yield from _jsonl_items(data)


def _jsonl_items(data: bytes) -> Iterator[Item]:
    for line in data.splitlines():
        line = line.strip().removeprefix(b"data:").strip()
        if not line or line.startswith(b":"):
            continue
        try:
            obj = parse.loads(line)
            is_score = isinstance(obj, dict) and "sentiment_score" in obj and "object" not in obj
            p = parse.sentiment_event(obj) if is_score else parse.firehose_event(obj)
        except ParseError as exc:
            yield _bad(line, exc)
        else:
            yield Item(_event_time(p), _mark_replay(p), b"")


def _symbol_of(path: Path) -> str | None:
    """``AAL_20220101_20220720.csv.gz`` → AAL; crypto captures (BTC, ETH) → BTC.X, ETH.X."""
    stem = path.name.split(".")[0].split("_")[0].upper()
    if not stem or stem.startswith("COLLECTION"):
        return None
    return f"{stem}.X" if stem in {"BTC", "ETH"} else stem


def _csv_items(data: bytes, default_symbol: str | None) -> Iterator[Item]:
    text = data.decode("utf-8", errors="replace")
    for row in csv.DictReader(io.StringIO(text, newline="")):
        try:
            p = parse.history_row(row, default_symbol=default_symbol)
        except ParseError as exc:
            yield _bad(",".join(str(v) for v in row.values()).encode(), exc)
        else:
            yield Item(_event_time(p), p, b"")


def load(paths: Iterable[Path]) -> tuple[list[Item], int]:
    """All items of all files in event-time order, duplicates dropped; and how many were."""
    seen: set[tuple[str, str, object]] = set()
    out: list[Item] = []
    duplicates = 0
    for path in paths:
        for item in items_of_file(path):
            if item.parsed is not None:
                # same topic, key and action = the same upstream event seen twice
                ident = (item.parsed.spec.name, item.parsed.key, item.parsed.record.get("action"))
                if ident in seen:
                    duplicates += 1
                    continue
                seen.add(ident)
            out.append(item)
    out.sort(key=lambda i: i.time_ms)  # stable: bad items (time 0) go first, in file order
    return out, duplicates


def pace(items: list[Item], speed: float, stop: Stop) -> Iterator[Item]:
    """Yield items, sleeping so event-time gaps shrink by ``speed`` (0: no sleeping)."""
    if speed <= 0:
        yield from items
        return
    start_wall = time.monotonic()
    first = next((i.time_ms for i in items if i.time_ms), 0)
    for item in items:
        if item.time_ms:
            due = start_wall + (item.time_ms - first) / 1000.0 / speed
            if (wait := due - time.monotonic()) > 0 and stop.sleep(wait):
                return
        if stop:
            return
        yield item


def replay(
    publisher: Publisher,
    items: list[Item],
    *,
    speed: float = 0.0,
    stop: Stop | None = None,
    progress: bool = True,
) -> int:
    """Publish ``items``; returns how many were published (dead letters not counted).

    :param speed: ×N real time; 0 publishes as fast as the producer takes them.
    """
    stop = stop or Stop()
    published = 0
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task("replay", total=len(items))
    try:
        for n, item in enumerate(pace(items, speed, stop), 1):
            if item.parsed is None:
                assert item.error is not None
                publisher.reject(item.raw, item.error)
            elif publisher.publish(item.parsed):
                published += 1
            if bar is not None and n % 500 == 0:
                bar.update(task, completed=n)
        if bar is not None:
            bar.update(task, completed=len(items))
    finally:
        if bar is not None:
            bar.stop()
    return published


def run(
    settings: Settings,
    files: list[Path],
    *,
    speed: float = 0.0,
    progress: bool = True,
    metrics_port: int | None = None,
) -> int:
    """``pulse produce replay FILE…``: captured files → the raw topics; the exit code.

    :param speed: ×N real time; 0 publishes as fast as the producer takes them.
    :param metrics_port: None: ``PULSE_METRICS_PORT``; -1: none.
    """
    from pulse.schemas.admin import ensure_topics

    items, duplicates = load(files)
    specs = {i.parsed.spec for i in items if i.parsed is not None}
    ensure_topics(settings, (*specs, DEAD_LETTER))
    publisher = Publisher(settings, "replay")
    port = settings.metrics_port if metrics_port is None else metrics_port
    server = metrics.serve(settings, port, lambda: {"healthy": True, **publisher.stats()})
    stop = Stop()
    with stop_on_signals(stop):
        started = time.monotonic()
        published = replay(publisher, items, speed=speed, stop=stop, progress=progress)
        left = publisher.flush(120)
    if server is not None:
        server.stop()
    took = time.monotonic() - started
    log.info(
        "replayed %d record(s) from %d file(s) in %.1fs (%d duplicate(s) dropped, %d dead "
        "letter(s))",
        published,
        len(files),
        took,
        duplicates,
        publisher.dead_lettered,
    )
    print(
        f"replayed {published} records ({duplicates} duplicates dropped, "
        f"{publisher.dead_lettered} dead letters) in {took:.1f}s"
    )
    return 0 if left == 0 and publisher.failed == 0 else 1

"""The live board: top symbols by current volume, bullish ratio with its interval, spikes.

Pure part: :func:`fold` keeps the latest window per symbol from the three output topics
and :func:`top_rows` / :func:`render` turn that into a table. I/O part: :func:`run` reads
pulse.volume, pulse.sentiment and pulse.spikes and redraws once a second with ``rich``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from schemas import topics
from settings import Settings

Record = Mapping[str, Any]
VOLUME, SENTIMENT, SPIKES = "volume", "sentiment", "spikes"
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> int:
    """``"1m"`` → 60000; ``"90s"``, ``"1h"``, ``"250ms"`` alike."""
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 1m, 30s, 1h)")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def default_window_ms(windows: str) -> int:
    """The smallest tumbling window of ``PULSE_WINDOWS``: the most 'current' view."""
    return min(duration_ms(w) for w in windows.split(",") if w.strip())


@dataclass(frozen=True)
class Board:
    """What the board knows: per symbol the latest window of one size, and recent spikes."""

    window_ms: int
    volume: Mapping[str, Record] = field(default_factory=dict)
    sentiment: Mapping[str, Record] = field(default_factory=dict)
    spikes: tuple[Record, ...] = ()  # newest first
    seen: Mapping[str, int] = field(default_factory=dict)  # records read per topic kind
    history: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    max_spikes: int = 10
    max_history: int = 60  # windows of volume kept per symbol, for the chart


def _version(r: Record) -> tuple[int, int]:
    return int(r["window_start_ms"]), int(r.get("revision") or 0)


def is_newer(current: Record | None, candidate: Record) -> bool:
    """A later window replaces an earlier one; a correction (higher revision) its original."""
    return current is None or _version(candidate) >= _version(current)


def _tumbling_of(record: Record, window_ms: int) -> bool:
    size = int(record["window_size_ms"])
    return size == window_ms and int(record.get("window_advance_ms") or size) == size


def fold(board: Board, kind: str, record: Record) -> Board:
    """The board after one record of ``kind`` (VOLUME, SENTIMENT or SPIKES)."""
    seen = {**board.seen, kind: board.seen.get(kind, 0) + 1}
    if kind == SPIKES:
        spikes = sorted((record, *board.spikes), key=_spike_time, reverse=True)
        return dataclasses.replace(board, spikes=tuple(spikes[: board.max_spikes]), seen=seen)
    if kind not in (VOLUME, SENTIMENT):
        raise ValueError(f"unknown record kind {kind!r}")
    latest = board.volume if kind == VOLUME else board.sentiment
    symbol = record["symbol"]
    if not _tumbling_of(record, board.window_ms):
        return dataclasses.replace(board, seen=seen)
    if kind == VOLUME:
        history = {**board.history, symbol: add_point(board.history.get(symbol, ()), record,
                                                      board.max_history)}  # fmt: skip
        board = dataclasses.replace(board, history=history)
    if not is_newer(latest.get(symbol), record):
        return dataclasses.replace(board, seen=seen)
    updated = {**latest, symbol: record}
    if kind == VOLUME:
        return dataclasses.replace(board, volume=updated, seen=seen)
    return dataclasses.replace(board, sentiment=updated, seen=seen)


def add_point(
    points: tuple[tuple[int, int], ...], volume: Record, keep: int
) -> tuple[tuple[int, int], ...]:
    """A symbol's (window start, count) series with this window set (a correction replaces
    its window), sorted, only the newest ``keep``."""
    start = int(volume["window_start_ms"])
    series = dict(points)
    series[start] = int(volume["message_count"])
    return tuple(sorted(series.items())[-keep:])


def _spike_time(spike: Record) -> tuple[int, int]:
    return int(spike.get("detected_at_ms") or 0), int(spike["window_end_ms"])


@dataclass(frozen=True)
class Row:
    symbol: str
    window_start_ms: int
    count: int
    bullish_ratio: float | None
    low: float | None
    high: float | None
    labelled: int
    spike: str | None  # severity of a spike in this or the previous window


def newest_window_ms(board: Board) -> int | None:
    """Start of the newest closed window on the board: 'now' in event time."""
    return max((int(r["window_start_ms"]) for r in board.volume.values()), default=None)


def top_rows(board: Board, n: int = 15, stale_windows: int = 5) -> list[Row]:
    """Symbols by message count of their latest window, leaving out those gone quiet.

    A symbol whose latest window is more than ``stale_windows`` windows older than the
    newest one on the board has no current volume; it drops off instead of lingering.
    """
    newest = newest_window_ms(board)
    if newest is None:
        return []
    oldest_current = newest - stale_windows * board.window_ms
    spiked = _recent_spikes(board, newest)
    rows = []
    for symbol, vol in board.volume.items():
        start = int(vol["window_start_ms"])
        if start < oldest_current:
            continue
        sent = board.sentiment.get(symbol)
        if sent is not None and int(sent["window_start_ms"]) != start:
            sent = None  # a ratio of another window would mislead
        bull, bear = int(vol.get("bullish") or 0), int(vol.get("bearish") or 0)
        rows.append(
            Row(
                symbol=symbol,
                window_start_ms=start,
                count=int(vol["message_count"]),
                bullish_ratio=sent.get("bullish_ratio") if sent else None,
                low=sent.get("bullish_ratio_low") if sent else None,
                high=sent.get("bullish_ratio_high") if sent else None,
                labelled=bull + bear,
                spike=spiked.get(symbol),
            )
        )
    rows.sort(key=lambda r: (-r.count, -r.window_start_ms, r.symbol))
    return rows[:n]


def _recent_spikes(board: Board, newest_start_ms: int) -> dict[str, str]:
    """Symbol → severity of spikes in the newest or the previous window (window end ≥ newest)."""
    out: dict[str, str] = {}
    for s in reversed(board.spikes):  # oldest first, so the newest severity wins
        if int(s["window_end_ms"]) >= newest_start_ms:
            out[s["symbol"]] = _severity(s)
    return out


def _severity(spike: Record) -> str:
    sev = spike.get("severity")
    return str(getattr(sev, "value", sev))


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def _size(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


def ratio_text(ratio: float | None, low: float | None, high: float | None) -> str:
    """``0.62 [0.48–0.74]``: the bullish share of labelled messages and its 95% interval."""
    if ratio is None:
        return "–"
    if low is None or high is None:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} [{low:.2f}–{high:.2f}]"


_SEVERITY_STYLE = {"HIGH": "bold white on red", "MEDIUM": "bold red", "LOW": "yellow"}


def render(board: Board, n: int = 15) -> Group:
    """The board as ``rich`` renderables: header, top symbols, latest spikes."""
    newest = newest_window_ms(board)
    size = _size(board.window_ms)
    if newest is None:
        head = Text(f"stocktwits-pulse · {size} windows · waiting for the first closed window…")
    else:
        head = Text.assemble(
            ("stocktwits-pulse", "bold"),
            f" · {size} windows · newest {_hhmm(newest)}–{_hhmm(newest + board.window_ms)} UTC"
            f" · read: {board.seen.get(VOLUME, 0)} volume, {board.seen.get(SENTIMENT, 0)} "
            f"sentiment, {board.seen.get(SPIKES, 0)} spikes",
        )
    top = Table(title=f"Top symbols by volume ({size})", expand=True, title_justify="left")
    for col, justify in (("symbol", "left"), ("window", "left"), ("messages", "right"),
                         ("bullish ratio [95% Wilson]", "right"), ("labelled", "right"),
                         ("spike", "left")):  # fmt: skip
        top.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in top_rows(board, n):
        style = _SEVERITY_STYLE.get(r.spike or "", "")
        top.add_row(
            f"${r.symbol}",
            _hhmm(r.window_start_ms),
            str(r.count),
            ratio_text(r.bullish_ratio, r.low, r.high),
            str(r.labelled),
            f"⚡ {r.spike}" if r.spike else "",
            style=style,
        )
    spikes = Table(title="Latest spikes", expand=True, title_justify="left")
    for col in ("symbol", "window", "messages", "expected", "× baseline", "z", "severity"):
        spikes.add_column(col)
    for s in board.spikes:
        sev = _severity(s)
        spikes.add_row(
            f"${s['symbol']}",
            f"{_hhmm(int(s['window_start_ms']))} {_size(int(s['window_size_ms']))}",
            str(s["count"]),
            f"{float(s['expected_count']):.1f}",
            f"{float(s['ratio']):.1f}",
            f"{float(s['score']):.1f}",
            Text(sev, style=_SEVERITY_STYLE.get(sev, "")),
        )
    return Group(head, top, spikes)


SPIKE_FIELDS = (
    "symbol",
    "window_start_ms",
    "window_size_ms",
    "count",
    "expected_count",
    "ratio",
    "score",
)


def snapshot(board: Board, n: int = 15) -> dict[str, Any]:
    """The board as JSON for the web page: the same rows as the terminal, plus series."""
    rows = top_rows(board, n)
    return {
        "window_ms": board.window_ms,
        "newest_window_ms": newest_window_ms(board),
        "seen": dict(board.seen),
        "rows": [dataclasses.asdict(r) for r in rows],
        "spikes": [
            {k: s.get(k) for k in SPIKE_FIELDS} | {"severity": _severity(s)} for s in board.spikes
        ],
        "history": {r.symbol: [list(p) for p in board.history.get(r.symbol, ())] for r in rows},
    }


# --- I/O -------------------------------------------------------------------------------------
KINDS = {VOLUME: topics.VOLUME, SENTIMENT: topics.SENTIMENT, SPIKES: topics.SPIKES}


class BoardReader:
    """Reads the three output topics into a :class:`Board` (from ``lookback_s`` ago)."""

    def __init__(self, settings: Settings, window_ms: int, lookback_s: float = 3600.0) -> None:
        from confluent_kafka import Consumer

        from schemas.serde import Serde

        self.board = Board(window_ms=window_ms)
        serde = Serde(settings)
        self._kind = {spec.full_name(settings): kind for kind, spec in KINDS.items()}
        self._decode: dict[str, Callable[[bytes], dict[str, Any]]] = {
            spec.full_name(settings): serde.deserializer(spec) for spec in KINDS.values()
        }
        self._lookback_ms = int(lookback_s * 1000)
        self._consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"pulse-board-{uuid.uuid4().hex[:12]}",  # a viewer moves no offsets
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "topic.metadata.refresh.interval.ms": 5000,  # see topics created after start
            }
        )
        self._consumer.subscribe(list(self._kind), on_assign=self._on_assign)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        # start at the first record of the lookback, not 30 days of retention
        since = int(time.time() * 1000) - self._lookback_ms
        for p in partitions:
            p.offset = since
        found = consumer.offsets_for_times(partitions, timeout=10)
        consumer.assign(found)

    def poll(self, timeout_s: float = 0.25) -> int:
        """Fold whatever arrived within ``timeout_s``; returns how many records."""
        msgs = self._consumer.consume(500, timeout_s)
        for msg in msgs:
            if msg.error() or msg.value() is None:
                continue
            try:
                record = self._decode[msg.topic()](msg.value())
            except Exception:  # noqa: BLE001 - a viewer skips what it cannot decode
                continue
            self.board = fold(self.board, self._kind[msg.topic()], record)
        return len(msgs)

    def close(self) -> None:
        self._consumer.close()


def run(
    settings: Settings,
    *,
    window_ms: int | None = None,
    top: int = 15,
    lookback_s: float = 3600.0,
    stop: threading.Event | None = None,
    console: Console | None = None,
    web_port: int | None = None,
    web_host: str = "127.0.0.1",
) -> Board:
    """Show the board until ``stop`` is set or Ctrl-C; returns the last state.

    :param web_port: also serve the board as a web page on this port (consumers/web.py).
    """
    from consumers.records import quiet_http_logs

    quiet_http_logs()  # log lines would tear through the live display
    stop = stop or threading.Event()
    reader = BoardReader(settings, window_ms or default_window_ms(settings.windows), lookback_s)
    stop_web = None
    if web_port is not None:
        from consumers.web import serve_in_thread

        _, stop_web = serve_in_thread(lambda: reader.board, web_port, web_host, top)
        (console or Console()).print(f"board on http://{web_host}:{web_port}/")
    try:
        with Live(render(reader.board, top), console=console, refresh_per_second=4) as live:
            next_draw = 0.0
            while not stop.is_set():
                reader.poll(0.25)
                if time.monotonic() >= next_draw:  # redraw once a second
                    live.update(render(reader.board, top))
                    next_draw = time.monotonic() + 1.0
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
        if stop_web is not None:
            stop_web()
    return reader.board


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulse board", description="Live board of the signals.")
    p.add_argument("--window", help="window size to show, e.g. 1m (default: smallest)")
    p.add_argument("--top", type=int, default=15, help="symbols to show (default 15)")
    p.add_argument("--lookback", type=float, default=3600.0, metavar="S",
                   help="read records from S seconds ago (default 3600)")  # fmt: skip
    p.add_argument("--web", type=int, metavar="PORT", help="also serve the board as a web page")
    p.add_argument("--web-host", default="127.0.0.1", help="address of the web page")
    return p


def main(settings: Settings, argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    window = duration_ms(args.window) if args.window else None
    run(settings, window_ms=window, top=args.top, lookback_s=args.lookback, web_port=args.web,
        web_host=args.web_host)  # fmt: skip
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(Settings.from_env(), sys.argv[1:]))

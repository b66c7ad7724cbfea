"""The live board: top symbols by current volume, bullish ratio per message and per user with
their intervals, which symbols are still cold (their spike baselines learning), spikes.

Pure part: :func:`fold` keeps the latest window per symbol from the three output topics
and :func:`top_rows` / :func:`render` turn that into a table. I/O part: :func:`run` reads
pulse.volume, pulse.sentiment and pulse.spikes and redraws once a second with ``rich``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pulse import kafka
from pulse.consumers.kafka_errors import ReaderErrors, partitions_of
from pulse.consumers.records import printable
from pulse.durations import format_duration_ms, parse_durations_ms
from pulse.schemas import topics
from pulse.settings import Settings

Record = Mapping[str, Any]
VOLUME, SENTIMENT, SPIKES = "volume", "sentiment", "spikes"


def default_window_ms(windows: str) -> int:
    """The smallest tumbling window of ``PULSE_WINDOWS``: the most 'current' view."""
    return min(parse_durations_ms(windows))


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
    user_ratio: float | None = None  # each user's labels vote once
    user_low: float | None = None
    user_high: float | None = None
    cold: bool = False  # its spike detectors are still learning: it cannot alert yet


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
        latest = sent = board.sentiment.get(symbol)
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
                user_ratio=sent.get("user_bullish_ratio") if sent else None,
                user_low=sent.get("user_bullish_ratio_low") if sent else None,
                user_high=sent.get("user_bullish_ratio_high") if sent else None,
                # the newest word on it, whatever its window (null: a writer that cannot say)
                cold=latest is not None and latest.get("baseline_warm") is False,
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


def _enum(value: Any, default: str) -> str:
    """An Avro enum as decoded (a str, or an Enum), the schema default when absent."""
    return default if value is None else str(getattr(value, "value", value))


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def ratio_text(ratio: float | None, low: float | None, high: float | None) -> str:
    """``0.62 [0.48–0.74]``: the bullish share of labelled messages and its 95% interval."""
    if ratio is None:
        return "–"
    if low is None or high is None:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} [{low:.2f}–{high:.2f}]"


_SEVERITY_STYLE = {"HIGH": "bold white on red", "MEDIUM": "bold red", "LOW": "yellow"}


def scored_text(spike: Record) -> str:
    """The volume the detector tested: ``62 users`` (or ``40 msgs``; older records: messages)."""
    scored = spike.get("scored_count")
    if scored is None:
        return f"{spike['count']} msgs"
    unit = "users" if _enum(spike.get("scored"), "MESSAGES") == "USERS" else "msgs"
    return f"{float(scored):.0f} {unit}"


def spike_window_text(spike: Record) -> str:
    """Start and length of what was tested: a SURGE may sum hours before its window."""
    end = int(spike["window_end_ms"])
    span = int(spike.get("span_ms") or spike["window_size_ms"])
    return f"{_hhmm(end - span)} {format_duration_ms(span)}"


def render(board: Board, n: int = 15, waiting: str | None = None) -> Group:
    """The board as ``rich`` renderables: header, top symbols, latest spikes.

    Upstream text (symbols) goes in as :class:`Text`, never as markup: a symbol ``[/]`` or
    ``[link=…]`` is shown as written, and control characters (ESC) are removed.
    """
    newest = newest_window_ms(board)
    size = format_duration_ms(board.window_ms)
    if newest is None:
        head = Text(f"stocktwits-pulse · {size} windows · waiting for the first closed window…")
    else:
        head = Text.assemble(
            ("stocktwits-pulse", "bold"),
            f" · {size} windows · newest {_hhmm(newest)}–{_hhmm(newest + board.window_ms)} UTC"
            f" · read: {board.seen.get(VOLUME, 0)} volume, {board.seen.get(SENTIMENT, 0)} "
            f"sentiment, {board.seen.get(SPIKES, 0)} spikes",
        )
    if waiting:
        head = Text.assemble(head, "\n", (f"⏳ {waiting}", "yellow"))
    top = Table(title=f"Top symbols by volume ({size})", expand=True, title_justify="left")
    for col, justify in (("symbol", "left"), ("window", "left"), ("messages", "right"),
                         ("bullish/message [95% Wilson]", "right"),
                         ("bullish/user [95% Wilson]", "right"), ("labelled", "right"),
                         ("spike", "left")):  # fmt: skip
        top.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in top_rows(board, n):
        style = _SEVERITY_STYLE.get(r.spike or "", "")
        top.add_row(
            Text(f"${printable(r.symbol)}"),
            _hhmm(r.window_start_ms),
            str(r.count),
            ratio_text(r.bullish_ratio, r.low, r.high),
            ratio_text(r.user_ratio, r.user_low, r.user_high),
            str(r.labelled),
            Text(f"⚡ {printable(r.spike, 12)}")
            if r.spike
            else Text("cold", style="dim")
            if r.cold
            else "",
            style=style,
        )
    spikes = Table(title="Latest spikes", expand=True, title_justify="left")
    for col in ("symbol", "window", "kind", "scored", "expected", "× baseline", "z", "severity"):
        spikes.add_column(col)
    for s in board.spikes:
        sev = printable(_severity(s), 12)
        spikes.add_row(
            Text(f"${printable(s['symbol'])}"),
            spike_window_text(s),
            printable(_enum(s.get("kind"), "BURST"), 8),
            scored_text(s),
            f"{float(s['expected_count']):.1f}",
            f"{float(s['ratio']):.1f}",
            f"{float(s['score']):.1f}",
            Text(sev, style=_SEVERITY_STYLE.get(sev, "")),
        )
    legend = Text(
        "cold: its spike baselines are still learning (5 days of history), so it "
        "cannot alert yet; see docs/signals.md on warm start",
        style="dim",
    )
    return Group(head, top, *([legend] if any(r.cold for r in top_rows(board, n)) else []), spikes)


SPIKE_FIELDS = (
    "symbol",
    "window_start_ms",
    "window_size_ms",
    "count",
    "expected_count",
    "ratio",
    "score",
    "distinct_users",
    "scored_count",
    "span_ms",
)


def snapshot(board: Board, n: int = 15, waiting: str | None = None) -> dict[str, Any]:
    """The board as JSON for the web page: the same rows as the terminal, plus series.

    The page puts every string in with ``textContent``, never as HTML.
    """
    rows = top_rows(board, n)
    return {
        "waiting": waiting,
        "window_ms": board.window_ms,
        "newest_window_ms": newest_window_ms(board),
        "seen": dict(board.seen),
        "rows": [dataclasses.asdict(r) for r in rows],
        "spikes": [
            {k: s.get(k) for k in SPIKE_FIELDS}
            | {
                "severity": _severity(s),
                "kind": _enum(s.get("kind"), "BURST"),
                "scored": _enum(s.get("scored"), "MESSAGES"),
                "scored_text": scored_text(s),
                "window_text": spike_window_text(s),
            }
            for s in board.spikes
        ],
        "history": {r.symbol: [list(p) for p in board.history.get(r.symbol, ())] for r in rows},
    }


# --- waiting ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """What the reader knows about why nothing is on the board yet."""

    phase: str  # CONNECTING, TOPICS, OFFSETS or READING
    broker_down_s: float | None = None
    last_error: str = ""
    upstream: tuple[tuple[str, str, int | None], ...] = ()  # (who, what, records so far)


CONNECTING, TOPICS, OFFSETS, READING = "connecting", "topics", "offsets", "reading"


def waiting_for(board: Board, progress: Progress) -> tuple[str, str] | None:
    """(what, a line saying so) the board is waiting for, None once windows are shown.

    A newcomer looking at an empty table learns which stage has not delivered yet.
    """
    if progress.broker_down_s is not None and progress.broker_down_s >= 3:
        return "broker", f"Kafka unreachable, retrying ({printable(progress.last_error, 80)})"
    if progress.phase == CONNECTING:
        return CONNECTING, "connecting to Kafka"
    if progress.phase == TOPICS:
        return TOPICS, "waiting for the output topics to be created (`pulse topics`)"
    if progress.phase == OFFSETS:
        return OFFSETS, "waiting for the output topics' partition leaders"
    if newest_window_ms(board) is not None:
        return None
    for n, (who, what, count) in enumerate(progress.upstream):
        if count == 0:
            before = progress.upstream[n - 1] if n else None
            got = f"{before[2]} {before[1]} in, " if before and before[2] else ""
            return who, f"waiting for the {who}: {got}no {what} yet"
    return "window", (
        f"waiting for the first {format_duration_ms(board.window_ms)} window to close: it "
        "closes once event time passes its end plus the grace period"
    )


# --- I/O -------------------------------------------------------------------------------------
KINDS = {VOLUME: topics.VOLUME, SENTIMENT: topics.SENTIMENT_WINDOWS, SPIKES: topics.SPIKES}
# what feeds the output topics, for the waiting line: (who, what, topic)
UPSTREAM = (("producer", "messages", topics.MESSAGES),
            ("worker", "mention batches", topics.MENTION_BATCHES))  # fmt: skip


class BoardReader:
    """Reads the three output topics into a :class:`Board` (from ``lookback_s`` ago).

    It assigns every partition itself (no consumer group): a broker restart or a leader
    election is waited out with the position kept, and an offsets request that fails on
    topics created a moment ago (``NOT_LEADER_FOR_PARTITION``) is retried, not fatal.
    """

    def __init__(
        self,
        settings: Settings,
        window_ms: int,
        lookback_s: float = 3600.0,
        errors: ReaderErrors | None = None,
    ) -> None:
        from pulse import kafka
        from pulse.schemas.serde import Serde

        self.board = Board(window_ms=window_ms)
        self.errors = errors or ReaderErrors("pulse board")
        serde = Serde(settings)
        self._kind = {spec.full_name(settings): kind for kind, spec in KINDS.items()}
        self._decode: dict[str, Callable[[bytes], dict[str, Any]]] = {
            spec.full_name(settings): serde.deserializer(spec) for spec in KINDS.values()
        }
        self._lookback_ms = int(lookback_s * 1000)
        # a viewer assigns its partitions and moves no offsets; each connection failure is
        # logged through error_cb, once (quiet: not again by librdkafka)
        config = kafka.reader_config(settings, "pulse-board", role="board")
        self._consumer = kafka.consumer(config, error_cb=self.errors.on_error, quiet=True)
        self.phase = CONNECTING
        self._upstream = _UpstreamCounter(
            config, [(who, what, spec.full_name(settings)) for who, what, spec in UPSTREAM]
        )
        self._since: dict[str, float] = {}
        self._next_probe = 0.0

    def poll(self, timeout_s: float = 0.25) -> int:
        """Fold whatever arrived within ``timeout_s``; returns how many records.

        :raises ReaderFailed: on an error waiting will not fix (credentials, missing topic).
        """
        self.errors.check()
        if self.phase != READING and not self._assign():
            time.sleep(timeout_s)
            self.errors.check()
            return 0
        msgs = self._consumer.consume(500, timeout_s)
        if not msgs:
            self._probe()
        for msg in msgs:
            if (err := msg.error()) is not None:
                self.errors.on_error(err, msg.topic())
                continue
            self.errors.ok()
            if (value := msg.value()) is None:
                continue
            topic, _, _ = kafka.position(msg)
            try:
                record = self._decode[topic](value)
            except Exception:  # noqa: BLE001 - a viewer skips what it cannot decode
                continue
            self.board = fold(self.board, self._kind[topic], record)
        return len(msgs)

    def _probe(self) -> None:
        """While the broker is thought away and nothing arrives, ask it every few seconds, so
        the board stops saying "unreachable" as soon as it is back, not at the next record."""
        from confluent_kafka import KafkaException

        if self.errors.down_since is None or time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + 3.0
        try:
            self._consumer.list_topics(timeout=0.5)
        except KafkaException:
            return
        self.errors.ok()

    def _assign(self) -> bool:
        """Every partition of the output topics from the lookback on; False: not yet."""
        from confluent_kafka import KafkaException

        parts = partitions_of(self._consumer, list(self._kind), self.errors)
        if parts is None:
            self.phase = TOPICS if self.errors.unknown_since else CONNECTING
            return False
        self.phase = OFFSETS
        # start at the first record of the lookback, not 30 days of retention
        since = int(time.time() * 1000) - self._lookback_ms
        for p in parts:
            p.offset = since
        try:
            found = self._consumer.offsets_for_times(parts, timeout=3)
        except KafkaException as exc:  # e.g. NOT_LEADER_FOR_PARTITION on new topics
            self.errors.on_exception(exc)
            return False
        failed = [(p.error, p.topic) for p in found if p.error is not None]
        if failed:
            self.errors.on_error(*failed[0])
            return False
        self._consumer.assign(found)  # -1 (no record since): from the end
        self.phase = READING
        return True

    def waiting(self) -> str | None:
        """The board's waiting line with how long it has waited, None if nothing is awaited."""
        progress = Progress(self.phase, self.errors.down_for_s(), self.errors.last_error,
                            self._upstream.counts())  # fmt: skip
        what = waiting_for(self.board, progress)
        if what is None:
            self._upstream.stop()  # windows are flowing: nothing more to explain
            return None
        since = self._since.setdefault(what[0], time.monotonic())
        return f"{what[1]} ({time.monotonic() - since:.0f} s)"

    def close(self) -> None:
        self._upstream.stop()
        self._consumer.close()


class _UpstreamCounter:
    """Counts the records of the topics that feed the board, from a thread of its own (a
    watermark request to an unreachable broker must not stall the board's redraw)."""

    def __init__(self, config: dict[str, Any], upstream: list[tuple[str, str, str]]) -> None:
        self._config = config  # the board's reader config (pulse.kafka), without callbacks
        self._upstream = upstream
        self._counts: dict[str, int | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="board-upstream", daemon=True)
        self._thread.start()

    def counts(self) -> tuple[tuple[str, str, int | None], ...]:
        return tuple((who, what, self._counts.get(topic)) for who, what, topic in self._upstream)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        from pulse import kafka

        consumer = kafka.consumer(self._config, quiet=True)
        try:
            while not self._stop.wait(2.0):
                try:
                    md = consumer.list_topics(timeout=2)
                    for _, _, topic in self._upstream:
                        meta = md.topics.get(topic)
                        if meta is None or not meta.partitions:
                            continue
                        marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), 2)
                                 for p in meta.partitions]  # fmt: skip
                        self._counts[topic] = sum(high - low for low, high in marks)
                except KafkaException:
                    continue  # the main reader reports the broker's state
        finally:
            consumer.close()


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
    :raises ReaderFailed: on an error waiting will not fix (credentials, missing topics).
    """
    from pulse.consumers.records import quiet_http_logs

    quiet_http_logs()  # log lines would tear through the live display
    stop = stop or threading.Event()
    reader = BoardReader(settings, window_ms or default_window_ms(settings.windows), lookback_s)
    stop_web = None
    if web_port is not None:
        from pulse.consumers.web import serve_in_thread

        _, stop_web = serve_in_thread(
            lambda: reader.board, web_port, web_host, top, get_waiting=reader.waiting
        )
        (console or Console()).print(f"board on http://{web_host}:{web_port}/")
    try:
        with Live(render(reader.board, top), console=console, refresh_per_second=4) as live:
            next_draw = 0.0
            while not stop.is_set():
                reader.poll(0.25)
                if time.monotonic() >= next_draw:  # redraw once a second
                    live.update(render(reader.board, top, reader.waiting()))
                    next_draw = time.monotonic() + 1.0
            live.update(render(reader.board, top, reader.waiting()))
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
        if stop_web is not None:
            stop_web()
    return reader.board

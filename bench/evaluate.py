"""Evaluate the spike detectors on the real histories: alerts, alert-days per week, events found.

Replays each history file of ``anshulrao-stocktwits-crawler/history/`` through the pure
detectors (:func:`processors.detectors.observe`, the call the engine makes at window close)
with the current settings. Windows are tallied from the CSV itself: tumbling windows by
``created_at``, messages of the file's symbol (its cashtags, as the replay producer reads
them), duplicates by message id dropped, distinct users per window.

    .venv/bin/python -m bench.evaluate            # current settings (PULSE_* apply)
    .venv/bin/python -m bench.evaluate --alerts   # ... and list every alert
    .venv/bin/python -m bench.evaluate --sweep    # the tables of docs/signals.md
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import io
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pulse.processors import detectors
from pulse.processors.detectors import Detection, DetectorRule, Kind, Scored
from pulse.producers import parse
from pulse.producers.replay import _symbol_of
from pulse.settings import Settings
from tests.support.data import HISTORY

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass(frozen=True)
class Event:
    """A labelled news event: found when an alert's span overlaps [start, end)."""

    symbol: str
    name: str
    start_ms: int
    end_ms: int


# from the issue; earnings "before the open" = press release ~07:00 ET, open 13:30Z
EVENTS = (
    Event("AAL", "AAL 2022-01-20 Q4 earnings", _ms("2022-01-20T10:00Z"), _ms("2022-01-20T17:00Z")),
    Event("AAL", "AAL 2022-04-21 Q1 earnings", _ms("2022-04-21T10:00Z"), _ms("2022-04-21T17:00Z")),
    Event("BTC.X", "BTC 2022-07-13 CPI", _ms("2022-07-13T12:30Z"), _ms("2022-07-13T14:30Z")),
)


@dataclass(frozen=True)
class Msg:
    created_ms: int
    user_id: int
    message_id: int


def _rows(path: Path) -> Iterable[dict[str, str]]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    yield from csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"), newline=""))


def load(history: Path) -> dict[str, list[Msg]]:
    """Messages per file symbol, de-duplicated by id, oldest first."""
    out: dict[str, dict[int, Msg]] = defaultdict(dict)
    for path in sorted(history.glob("*.csv*")):
        symbol = _symbol_of(path)
        if symbol is None:
            continue
        for row in _rows(path):
            try:
                rec = parse.history_row(row, default_symbol=symbol).record
            except parse.ParseError:
                continue
            body = rec["message"]
            if symbol not in {s["symbol"] for s in body["symbols"]}:
                continue
            out[symbol][rec["message_id"]] = Msg(
                rec["event_time_ms"], body["user"]["id"], rec["message_id"]
            )
    return {s: sorted(m.values(), key=lambda x: x.created_ms) for s, m in out.items()}


Window = tuple[int, int, int, int]  # (start, size, messages, distinct users)


def tally(msgs: list[Msg], sizes: Iterable[int]) -> list[Window]:
    """Non-empty tumbling windows of each size, ordered by end then size (the engine's)."""
    windows: list[Window] = []
    for size in sorted(set(sizes)):
        counts: dict[int, int] = defaultdict(int)
        users: dict[int, set[int]] = defaultdict(set)
        for m in msgs:
            start = m.created_ms - m.created_ms % size
            counts[start] += 1
            users[start].add(m.user_id)
        windows += [(s, size, counts[s], len(users[s])) for s in counts]
    windows.sort(key=lambda w: (w[0] + w[1], w[1]))
    return windows


def run(windows: list[Window], rule: DetectorRule) -> list[tuple[int, Detection]]:
    """The alerts of one symbol: (window end, verdict)."""
    state = detectors.DetectorState()
    alerts = []
    for start, size, count, users in windows:
        verdict = detectors.observe(state, start, size, count, users, rule)
        if verdict is not None:
            alerts.append((start + size, verdict))
    return alerts


@dataclass
class Summary:
    symbol: str
    messages: int
    weeks: float
    alerts: dict[str, int]
    alert_days_per_week: float
    found: dict[str, str]  # event name → kinds that found it ("" = missed)


def summarise(symbol: str, msgs: list[Msg], alerts: list[tuple[int, Detection]]) -> Summary:
    span = msgs[-1].created_ms - msgs[0].created_ms if msgs else 0
    weeks = max(span / WEEK_MS, 1 / 7)
    days = {end // DAY_MS for end, _ in alerts}
    by_kind = {k.value: sum(1 for _, v in alerts if v.kind is k) for k in Kind}
    found = {}
    for e in EVENTS:
        if e.symbol != symbol:
            continue
        kinds = sorted(
            {v.kind.value for end, v in alerts if end - v.span_ms < e.end_ms and end > e.start_ms}
        )
        found[e.name] = "+".join(kinds)
    return Summary(symbol, len(msgs), weeks, by_kind, len(days) / weeks, found)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def print_report(data: dict[str, list[Msg]], rule: DetectorRule, list_alerts: bool) -> None:
    sizes = [*rule.burst_sizes_ms, *([rule.surge_size_ms] if rule.surge_size_ms else [])]
    print(f"scored: {rule.scored.value}; burst {rule.burst}; surge {rule.surge}\n")
    print("| symbol | msgs | weeks | BURST | SURGE | alert-days/week | labelled events |")
    print("|---|---|---|---|---|---|---|")
    for symbol, msgs in sorted(data.items()):
        alerts = run(tally(msgs, sizes), rule)
        s = summarise(symbol, msgs, alerts)
        events = "; ".join(f"{n}: {k or 'MISSED'}" for n, k in s.found.items()) or "–"
        print(
            f"| {symbol} | {s.messages:,} | {s.weeks:.1f} | {s.alerts['BURST']} | "
            f"{s.alerts['SURGE']} | {s.alert_days_per_week:.2f} | {events} |"
        )
        if list_alerts:
            for end, v in alerts:
                print(
                    f"    {_iso(end - v.span_ms)}–{_iso(end)[11:]} {v.kind.value:5} "
                    f"{v.count:.0f} vs {v.expected_count:.1f} ({v.ratio:.1f}×, "
                    f"p={v.p_value:.1e}, {v.message_count} msgs/{v.users} users in window)"
                )


# --- sweep -------------------------------------------------------------------------------


def _score(
    data: dict[str, list[Msg]],
    rule: DetectorRule,
    windows: dict[str, list[Window]],
    kind: Kind,
) -> tuple[float, float, int]:
    """(mean alert-days/week over symbols, the worst symbol's, labelled events found) of
    one detector's alerts."""
    rates, found = [], 0
    for symbol, msgs in data.items():
        alerts = [(end, v) for end, v in run(windows[symbol], rule) if v.kind is kind]
        s = summarise(symbol, msgs, alerts)
        rates.append(s.alert_days_per_week)
        found += sum(1 for k in s.found.values() if k)
    return sum(rates) / len(rates), max(rates), found


def sweep(data: dict[str, list[Msg]], base: DetectorRule) -> None:
    """Each detector alone over its main parameters, for both scored volumes."""
    # the burst detector reads the surge detector's hour-of-day profile: keep both running
    no_burst = dataclasses.replace(base, burst_sizes_ms=())
    sizes = [*base.burst_sizes_ms, base.surge_size_ms or 3_600_000]
    burst_w = {s: tally(m, sizes) for s, m in data.items()}
    surge_w = {s: tally(m, sizes[-1:]) for s, m in data.items()}
    print("BURST alerts (5-min windows): alert-days/week mean / worst symbol, events found /3")
    print("| scored | min_count | z=3 | z=4 | z=5 | z=6 |\n|---|---|---|---|---|---|")
    for scored in Scored:
        for min_count in (5, 8, 10, 15):
            cells = []
            for z in (3.0, 4.0, 5.0, 6.0):
                rule = dataclasses.replace(
                    base,
                    scored=scored,
                    burst=dataclasses.replace(base.burst, z=z, min_count=min_count),
                )
                mean, worst, found = _score(data, rule, burst_w, Kind.BURST)
                cells.append(f"{mean:.2f} / {worst:.2f} / {found}")
            print(f"| {scored.value.lower()} | {min_count} | " + " | ".join(cells) + " |")
    print("\nSURGE alerts (1-h windows): alert-days/week mean / worst symbol, events found /3")
    ps = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
    print("| scored | min_count | min_ratio | " + " | ".join(f"p={p:.0e}" for p in ps) + " |")
    print("|---|---|---|" + "---|" * len(ps))
    for scored in Scored:
        for min_count in (8, 12, 20):
            for min_ratio in (1.5, 2.0, 3.0):
                cells = []
                for p in ps:
                    rule = dataclasses.replace(
                        no_burst,
                        scored=scored,
                        surge=dataclasses.replace(
                            base.surge, p=p, min_count=min_count, min_ratio=min_ratio
                        ),
                    )
                    mean, worst, found = _score(data, rule, surge_w, Kind.SURGE)
                    cells.append(f"{mean:.2f} / {worst:.2f} / {found}")
                print(
                    f"| {scored.value.lower()} | {min_count} | {min_ratio} | "
                    + " | ".join(cells)
                    + " |"
                )
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=Path, default=HISTORY)
    parser.add_argument("--alerts", action="store_true", help="list every alert")
    parser.add_argument("--sweep", action="store_true", help="parameter sweep tables")
    args = parser.parse_args(argv)
    rule = detectors.rule_from_settings(Settings.from_env())
    data = load(args.history)
    if args.sweep:
        sweep(data, rule)
    else:
        print_report(data, rule, args.alerts)


if __name__ == "__main__":
    main()

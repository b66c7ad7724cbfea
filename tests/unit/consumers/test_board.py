from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from pulse.consumers.board import (
    CONNECTING,
    OFFSETS,
    READING,
    SENTIMENT,
    SPIKES,
    TOPICS,
    VOLUME,
    Board,
    Progress,
    default_window_ms,
    fold,
    is_newer,
    ratio_text,
    render,
    snapshot,
    top_rows,
    waiting_for,
)

M = 60_000


def vol(symbol: str, start: int, count: int, *, size: int = M, advance: int | None = None,
        revision: int = 0, bullish: int = 0, bearish: int = 0) -> dict[str, Any]:  # fmt: skip
    return {
        "symbol": symbol, "window_start_ms": start, "window_end_ms": start + size,
        "window_size_ms": size, "window_advance_ms": advance or size, "message_count": count,
        "distinct_users": count, "bullish": bullish, "bearish": bearish, "unlabelled": 0,
        "revision": revision, "emitted_at_ms": 0,
    }  # fmt: skip


def sent(symbol: str, start: int, ratio: float | None, low: float | None = None,
         high: float | None = None, size: int = M) -> dict[str, Any]:  # fmt: skip
    return {
        "symbol": symbol, "window_start_ms": start, "window_end_ms": start + size,
        "window_size_ms": size, "window_advance_ms": size, "bullish": 0, "bearish": 0,
        "bullish_ratio": ratio, "bullish_ratio_low": low, "bullish_ratio_high": high,
        "revision": 0,
    }  # fmt: skip


def spike(symbol: str, start: int, severity: str = "HIGH", detected: int = 0) -> dict[str, Any]:
    return {
        "symbol": symbol, "window_start_ms": start, "window_end_ms": start + M,
        "window_size_ms": M, "count": 40, "expected_count": 4.0, "score": 9.0, "p_value": None,
        "ratio": 10.0, "bullish_ratio": None, "sample_message_ids": [], "severity": severity,
        "detected_at_ms": detected or start + M,
    }  # fmt: skip


def fold_all(board: Board, items: list[tuple[str, dict[str, Any]]]) -> Board:
    for kind, record in items:
        board = fold(board, kind, record)
    return board


def test_default_window_is_the_smallest_tumbling_window() -> None:
    assert default_window_ms("5m,1m,1h") == M


@pytest.mark.parametrize(
    "current, candidate, newer",
    [
        (None, vol("A", 0, 1), True),
        (vol("A", 0, 1), vol("A", M, 1), True),  # later window
        (vol("A", M, 1), vol("A", 0, 1), False),  # an older window arriving late
        (vol("A", 0, 1), vol("A", 0, 2, revision=1), True),  # correction
        (vol("A", 0, 2, revision=1), vol("A", 0, 1), False),  # the original after its fix
    ],
)
def test_is_newer(current: dict[str, Any] | None, candidate: dict[str, Any], newer: bool) -> None:
    assert is_newer(current, candidate) is newer


def test_fold_keeps_the_latest_window_per_symbol_and_counts_what_it_read() -> None:
    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("AAPL", 0, 5)), (VOLUME, vol("AAPL", M, 7)), (VOLUME, vol("AAPL", 0, 99)),
        (VOLUME, vol("TSLA", M, 3)),
    ])  # fmt: skip
    assert {s: r["message_count"] for s, r in board.volume.items()} == {"AAPL": 7, "TSLA": 3}
    assert board.seen == {VOLUME: 4}


def test_fold_ignores_other_window_sizes_and_hopping_windows() -> None:
    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("AAPL", 0, 5)),
        (VOLUME, vol("AAPL", 0, 50, size=5 * M)),
        (VOLUME, vol("AAPL", M, 60, size=M, advance=M // 2)),
    ])  # fmt: skip
    assert board.volume["AAPL"]["message_count"] == 5


def test_fold_does_not_change_the_board_it_was_given() -> None:
    before = Board(window_ms=M)
    after = fold(before, VOLUME, vol("AAPL", 0, 5))
    assert before.volume == {} and after.volume["AAPL"]["message_count"] == 5


def test_spikes_newest_first_and_bounded() -> None:
    board = Board(window_ms=M, max_spikes=3)
    for i in [2, 0, 4, 1, 3]:
        board = fold(board, SPIKES, spike(f"S{i}", i * M))
    assert [s["symbol"] for s in board.spikes] == ["S4", "S3", "S2"]


def test_unknown_kind_is_a_bug() -> None:
    with pytest.raises(ValueError):
        fold(Board(window_ms=M), "likes", {})


def test_top_rows_rank_by_count_drop_stale_and_join_sentiment_of_the_same_window() -> None:
    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("AAPL", 10 * M, 12, bullish=6, bearish=2)),
        (VOLUME, vol("TSLA", 10 * M, 30)),
        (VOLUME, vol("GME", 9 * M, 20)),
        (VOLUME, vol("OLD", 2 * M, 500)),  # quiet for 8 windows: no current volume
        (SENTIMENT, sent("AAPL", 10 * M, 0.75, 0.41, 0.93)),
        (SENTIMENT, sent("TSLA", 9 * M, 0.2, 0.1, 0.3)),  # a previous window: not shown
    ])  # fmt: skip
    rows = top_rows(board, n=10, stale_windows=5)
    assert [r.symbol for r in rows] == ["TSLA", "GME", "AAPL"]
    aapl = rows[2]
    assert (aapl.bullish_ratio, aapl.low, aapl.high, aapl.labelled) == (0.75, 0.41, 0.93, 8)
    assert rows[0].bullish_ratio is None
    assert [r.symbol for r in top_rows(board, n=1)] == ["TSLA"]


def test_top_rows_mark_symbols_that_spiked_in_the_newest_or_previous_window() -> None:
    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("A", 10 * M, 40)), (VOLUME, vol("B", 10 * M, 30)),
        (VOLUME, vol("C", 10 * M, 20)),
        (SPIKES, spike("A", 10 * M, "HIGH")), (SPIKES, spike("B", 9 * M, "LOW")),
        (SPIKES, spike("C", 5 * M, "MEDIUM")),  # long ago
    ])  # fmt: skip
    assert {r.symbol: r.spike for r in top_rows(board)} == {"A": "HIGH", "B": "LOW", "C": None}


def test_empty_board_has_no_rows() -> None:
    assert top_rows(Board(window_ms=M)) == []


@pytest.mark.parametrize(
    "ratio, low, high, text",
    [(None, None, None, "–"), (0.5, None, None, "0.50"), (0.625, 0.4, 0.81, "0.62 [0.40–0.81]")],
)
def test_ratio_text(ratio: float | None, low: float | None, high: float | None, text: str) -> None:
    assert ratio_text(ratio, low, high) == text


def test_render_shows_symbols_interval_and_spikes() -> None:
    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("AAPL", 10 * M, 12)), (SENTIMENT, sent("AAPL", 10 * M, 0.75, 0.41, 0.93)),
        (SPIKES, spike("AAPL", 10 * M, "HIGH")),
    ])  # fmt: skip
    console = Console(width=140, record=True, color_system=None)
    console.print(render(board))
    text = console.export_text()
    assert "$AAPL" in text and "0.75 [0.41–0.93]" in text and "⚡ HIGH" in text
    assert "Latest spikes" in text and "10.0" in text
    console = Console(width=140, record=True, color_system=None)
    console.print(render(Board(window_ms=M)))
    assert "waiting for the first closed window" in console.export_text()


def test_history_keeps_the_newest_windows_per_symbol_in_order() -> None:
    board = Board(window_ms=M, max_history=3)
    for start, count in [(2, 20), (0, 5), (1, 10), (3, 30), (1, 11)]:  # (1, 11): a correction
        board = fold(board, VOLUME, vol("AAPL", start * M, count))
    assert board.history["AAPL"] == ((1 * M, 11), (2 * M, 20), (3 * M, 30))


def test_snapshot_is_json_with_rows_spikes_and_series_of_the_shown_symbols() -> None:
    import json

    from pulse.consumers.board import snapshot

    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("AAPL", 9 * M, 10)), (VOLUME, vol("AAPL", 10 * M, 12)),
        (VOLUME, vol("OLD", 0, 99)), (SPIKES, spike("AAPL", 10 * M)),
    ])  # fmt: skip
    snap = json.loads(json.dumps(snapshot(board)))
    assert [r["symbol"] for r in snap["rows"]] == ["AAPL"]
    assert snap["rows"][0]["spike"] == "HIGH" and snap["newest_window_ms"] == 10 * M
    assert snap["history"] == {"AAPL": [[9 * M, 10], [10 * M, 12]]}
    assert snap["spikes"][0]["severity"] == "HIGH" and snap["spikes"][0]["count"] == 40


HOSTILE = ["[/]", "[link=http://evil]AAPL[/link]", "\x1b[2J\x1b]8;;http://evil\x07X\x1b[0m",
           "<!channel>", "<https://x|AAPL>", "[bold red]", "Z" * 5000, "\u202eLPAA",
           "a\r\nb"]  # fmt: skip


def test_hostile_symbols_render_as_text_never_as_markup_or_escapes() -> None:
    board = Board(window_ms=M)
    for n, symbol in enumerate(HOSTILE):
        board = fold_all(board, [(VOLUME, vol(symbol, 0, 100 - n)), (SPIKES, spike(symbol, 0))])
    console = Console(record=True, width=250, color_system="truecolor", force_terminal=True)
    console.print(render(board, n=20))  # a symbol "[/]" crashed here (MarkupError)
    ansi = console.export_text(styles=True)
    console2 = Console(record=True, width=250)
    console2.print(render(board, n=20))
    plain = console2.export_text()
    assert "$[/]" in plain and "$[link=http://evil]AAPL[/link]" in plain  # shown as written
    assert "$<!channel>" in plain and "$[bold red]" in plain
    assert "\x1b" not in plain and "\x07" not in plain and "\u202e" not in plain
    assert "\x1b]8;" not in ansi  # no hyperlink escape made of a symbol, no screen clear
    assert "\x1b[2J" not in ansi
    assert "Z" * 100 not in plain  # 5 KB cut short


def test_the_web_snapshot_of_hostile_symbols_is_json() -> None:
    import json

    board = fold_all(Board(window_ms=M), [(VOLUME, vol(s, 0, 5)) for s in HOSTILE])
    snap = snapshot(board, n=20, waiting=None)
    assert {r["symbol"] for r in snap["rows"]} == set(HOSTILE)  # data; the page uses textContent
    json.dumps(snap)


def _progress(phase: str = READING, down: float | None = None,
              upstream: tuple[tuple[str, str, int | None], ...] = ()) -> Progress:  # fmt: skip
    return Progress(phase, down, "Connection refused", upstream)


UP = (("producer", "messages"), ("worker", "mention batches"))


@pytest.mark.parametrize(
    "progress, key, text",
    [
        (_progress(CONNECTING), CONNECTING, "connecting to Kafka"),
        (_progress(TOPICS), TOPICS, "waiting for the output topics to be created"),
        (_progress(OFFSETS), OFFSETS, "waiting for the output topics' partition leaders"),
        (_progress(READING, down=10.0), "broker", "Kafka unreachable, retrying"),
        (_progress(READING, down=1.0), "window", "waiting for the first 1m window to close"),
        (_progress(upstream=((*UP[0], 0), (*UP[1], 0))), "producer",
         "waiting for the producer: no messages yet"),
        (_progress(upstream=((*UP[0], 530), (*UP[1], 0))), "worker",
         "waiting for the worker: 530 messages in, no mention batches yet"),
        (_progress(upstream=((*UP[0], 530), (*UP[1], None))), "window",
         "waiting for the first 1m window to close"),
        (_progress(upstream=((*UP[0], 530), (*UP[1], 12))), "window",
         "waiting for the first 1m window to close"),
    ],
)  # fmt: skip
def test_the_board_says_what_it_is_waiting_for(progress: Progress, key: str, text: str) -> None:
    got = waiting_for(Board(window_ms=M), progress)
    assert got is not None and got[0] == key and got[1].startswith(text)


def test_nothing_is_awaited_once_windows_show_unless_the_broker_is_away() -> None:
    board = fold(Board(window_ms=M), VOLUME, vol("AAPL", 0, 5))
    assert waiting_for(board, _progress()) is None
    assert waiting_for(board, _progress(down=5.0)) is not None


def test_render_shows_the_waiting_line() -> None:
    console = Console(record=True, width=200)
    console.print(
        render(Board(window_ms=M), waiting="waiting for the worker: no mention batches yet (12 s)")
    )
    assert "⏳ waiting for the worker: no mention batches yet (12 s)" in console.export_text()


# --- signals v2: per-user ratio, cold symbols, the detector that fired ------------------------


def sent2(symbol: str, start: int, ratio: float | None, user_ratio: float | None,
          warm: bool | None, low: float | None = None, high: float | None = None,
          size: int = M) -> dict[str, Any]:  # fmt: skip
    return {**sent(symbol, start, ratio, low, high, size), "user_bullish_ratio": user_ratio,
            "user_bullish_ratio_low": None if user_ratio is None else 0.1,
            "user_bullish_ratio_high": None if user_ratio is None else 0.9,
            "baseline_warm": warm}  # fmt: skip


def surge(symbol: str, end: int, span: int, users: float) -> dict[str, Any]:
    return {
        **spike(symbol, end - M),
        "kind": "SURGE",
        "scored": "USERS",
        "scored_count": users,
        "span_ms": span,
        "distinct_users": 12,
        "count": 20,
    }


def test_rows_carry_both_ratios_and_whether_the_symbol_is_cold() -> None:
    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("NEW", 10 * M, 12)), (SENTIMENT, sent2("NEW", 10 * M, 0.8, 0.5, False)),
        (VOLUME, vol("OLD", 10 * M, 11)), (SENTIMENT, sent2("OLD", 10 * M, 0.3, 0.25, True)),
        (VOLUME, vol("V1", 10 * M, 10)), (SENTIMENT, sent(("V1"), 10 * M, 0.5)),  # no fields
        # the newest word on warmth counts even when it is of an older window
        (VOLUME, vol("LAG", 10 * M, 9)), (SENTIMENT, sent2("LAG", 9 * M, 0.5, 0.5, False)),
    ])  # fmt: skip
    rows = {r.symbol: r for r in top_rows(board)}
    assert (rows["NEW"].bullish_ratio, rows["NEW"].user_ratio, rows["NEW"].cold) == (0.8, 0.5, True)
    assert (rows["NEW"].user_low, rows["NEW"].user_high) == (0.1, 0.9)
    assert (rows["OLD"].user_ratio, rows["OLD"].cold) == (0.25, False)
    assert (rows["V1"].user_ratio, rows["V1"].cold) == (None, False)  # cannot tell: not cold
    assert (rows["LAG"].bullish_ratio, rows["LAG"].cold) == (None, True)


def test_render_shows_both_ratios_cold_symbols_and_the_detector_that_fired() -> None:
    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("AAPL", 10 * M, 12)),
        (SENTIMENT, sent2("AAPL", 10 * M, 0.75, 0.5, True, 0.41, 0.93)),
        (VOLUME, vol("NEW", 10 * M, 5)), (SENTIMENT, sent2("NEW", 10 * M, None, None, False)),
        (SPIKES, surge("AAPL", 200 * M, 180 * M, 36.0)), (SPIKES, spike("OLDREC", 2 * M, "LOW")),
    ])  # fmt: skip
    console = Console(width=200, record=True, color_system=None)
    console.print(render(board))
    text = console.export_text()
    assert "bullish/message" in text and "bullish/user" in text
    assert "0.75 [0.41–0.93]" in text and "0.50 [0.10–0.90]" in text
    new_row = next(line for line in text.splitlines() if "$NEW" in line)
    assert "cold" in new_row and "cold: its spike baselines are still learning" in text
    surge_row = next(line for line in text.splitlines() if "SURGE" in line)
    assert "$AAPL" in surge_row and "36 users" in surge_row and "3h" in surge_row
    assert "00:20:00 3h" in surge_row  # the 3 hours tested, ending at the window's end
    old = next(line for line in text.splitlines() if "$OLDREC" in line)
    assert "BURST" in old and "40 msgs" in old  # a v1 record: messages, its own window
    warm_only = fold_all(
        Board(window_ms=M),
        [(VOLUME, vol("AAPL", 0, 1)), (SENTIMENT, sent2("AAPL", 0, None, None, True))],
    )
    console = Console(width=200, record=True, color_system=None)
    console.print(render(warm_only))
    assert "cold" not in console.export_text()


def test_snapshot_has_the_new_row_and_spike_fields() -> None:
    import json

    board = fold_all(Board(window_ms=M), [
        (VOLUME, vol("AAPL", 10 * M, 12)), (SENTIMENT, sent2("AAPL", 10 * M, 0.75, 0.5, False)),
        (SPIKES, surge("AAPL", 11 * M, 3 * M, 36.0)),
    ])  # fmt: skip
    snap = json.loads(json.dumps(snapshot(board)))
    row = snap["rows"][0]
    assert (row["user_ratio"], row["user_low"], row["user_high"], row["cold"]) == (
        0.5,
        0.1,
        0.9,
        True,
    )
    s = snap["spikes"][0]
    assert (s["kind"], s["scored"], s["scored_text"], s["window_text"], s["span_ms"]) == (
        "SURGE",
        "USERS",
        "36 users",
        "00:08:00 3m",
        3 * M,
    )
    old = json.loads(json.dumps(snapshot(fold(board, SPIKES, spike("X", 0)))))["spikes"][-1]
    assert (old["kind"], old["scored"], old["scored_text"]) == ("BURST", "MESSAGES", "40 msgs")

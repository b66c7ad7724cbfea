"""The board's web page: its JSON over HTTP, and the page as a real headless Chromium draws it."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulse.consumers.board import SENTIMENT, SPIKES, VOLUME, Board, fold, snapshot
from pulse.consumers.web import serve_in_thread
from pulse.local.stack import free_port

pytestmark = pytest.mark.integration
M = 60_000
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _board() -> Board:
    board = Board(window_ms=M)
    for w in range(10):
        for sym, n in (("PLTR", 90 if w == 9 else 10), ("AAPL", 40)):
            board = fold(board, VOLUME, {
                "symbol": sym, "window_start_ms": w * M, "window_end_ms": (w + 1) * M,
                "window_size_ms": M, "window_advance_ms": M, "message_count": n,
                "bullish": 6, "bearish": 2, "revision": 0,
            })  # fmt: skip
    board = fold(board, SENTIMENT, {
        "symbol": "AAPL", "window_start_ms": 9 * M, "window_size_ms": M, "window_advance_ms": M,
        "bullish_ratio": 0.75, "bullish_ratio_low": 0.41, "bullish_ratio_high": 0.93,
    })  # fmt: skip
    return fold(board, SPIKES, {
        "symbol": "PLTR", "window_start_ms": 9 * M, "window_end_ms": 10 * M,
        "window_size_ms": M, "count": 90, "expected_count": 10.0, "ratio": 9.0, "score": 25.3,
        "severity": "HIGH", "detected_at_ms": 10 * M,
    })  # fmt: skip


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    board = _board()
    port = free_port()
    _, stop = serve_in_thread(lambda: board, port)
    yield f"http://127.0.0.1:{port}/"
    stop()


def test_the_api_serves_the_board_snapshot(url: str) -> None:
    with urllib.request.urlopen(url + "api/board", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        assert json.loads(resp.read()) == json.loads(json.dumps(snapshot(_board())))
    with urllib.request.urlopen(url, timeout=5) as resp:
        page = resp.read().decode()
    assert "<title>stocktwits-pulse" in page and 'fetch("api/board")' in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_headless_chromium_draws_rows_spikes_and_the_chart(url: str, tmp_path: Path) -> None:
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=3000", "--dump-dom", url,
    ]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True).stdout
    assert "newest 00:09:00–00:10:00 UTC" in dom  # the script ran and fetched the data
    assert '<tr class="sym sel HIGH">' in dom and "$PLTR" in dom  # top row, spike highlighted
    assert "0.75 [0.41–0.93]" in dom  # AAPL's ratio with its interval
    assert dom.count("<rect") == 10  # PLTR's chart: one bar per window
    assert "$PLTR: messages per window" in dom

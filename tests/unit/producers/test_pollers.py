"""Pure helpers of producers.pollers: stream paths, chart resume keys, bounded id memory."""

from __future__ import annotations

import pytest

from pulse.producers.pollers import ChartPoller, SeenIds, stream_path


@pytest.mark.parametrize(
    "spec, path",
    [
        ("trending", "trending"),
        ("all", "all"),
        (" symbol:AAPL ", "symbol/AAPL"),
        ("watchlist:42", "watchlist/42"),
    ],
)
def test_stream_path(spec: str, path: str) -> None:
    assert stream_path(spec) == path


def test_latest_from_keys_keeps_newest_per_symbol_and_zoom() -> None:
    keys = [
        b"AAPL|1D|100",
        b"AAPL|1D|300",
        b"AAPL|1D|200",
        b"AAPL|1W|50",
        b"TSLA|1D|7",
        b"garbage",
        b"X|1D|notanumber",
    ]
    assert ChartPoller.latest_from_keys(keys) == {
        ("AAPL", "1D"): 300,
        ("AAPL", "1W"): 50,
        ("TSLA", "1D"): 7,
    }


def test_seen_ids_forget_oldest_beyond_capacity() -> None:
    seen = SeenIds(capacity=3)
    for i in (1, 2, 3, 4):
        seen.add(i)
    assert 1 not in seen and all(i in seen for i in (2, 3, 4)) and len(seen) == 3

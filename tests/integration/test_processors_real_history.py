"""Replay the real AAL history through a worker; compare with a computation over the CSV."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from processors.app import prepare
from processors.harness import RawWriter, WorkerProcess, message_event, read_records
from schemas import topics
from settings import Settings
from tests.conftest import REAL_DATA
from tests.integration.test_processors_e2e import worker_settings

pytestmark = pytest.mark.integration

AAL = REAL_DATA / "anshulrao-stocktwits-crawler" / "history" / "AAL_20220101_20220720.csv.gz"
SIZES = (300_000, 3_600_000)


def load_history(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        created = datetime.strptime(row["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        row["t"] = int(created.timestamp() * 1000)
    return rows


def expected_windows(rows: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, int]]:
    """(size, start) → tallies, straight from the CSV rows (each message id once)."""
    tallies: dict[tuple[int, int], dict[str, Any]] = defaultdict(
        lambda: {"message_count": 0, "bullish": 0, "bearish": 0, "unlabelled": 0, "users": set()}
    )
    seen: set[str] = set()
    for row in rows:
        if row["message_id"] in seen:
            continue
        seen.add(row["message_id"])
        label = {"Bullish": "bullish", "Bearish": "bearish"}.get(row["bear_bull_tag"], "unlabelled")
        for size in SIZES:
            tally = tallies[(size, row["t"] - row["t"] % size)]
            tally["message_count"] += 1
            tally[label] += 1
            tally["users"].add(row["user_id"])
    return {
        key: {**{k: v for k, v in t.items() if k != "users"}, "distinct_users": len(t["users"])}
        for key, t in tallies.items()
    }


@pytest.mark.skipif(not AAL.exists(), reason="real AAL history not present")
def test_real_aal_history_matches_independent_tallies(settings: Settings, tmp_path: Path) -> None:
    rows = load_history(AAL)
    assert len({r["message_id"] for r in rows}) == 14_104
    s = worker_settings(
        settings, tmp_path, raw_partitions=1, symbol_partitions=1, windows="5m,1h",
        hopping_windows="", idle_close_s=600.0,
    )
    prepare(s)
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        writer = RawWriter(s)
        for row in sorted(rows, key=lambda r: (r["t"], int(r["message_id"]))):
            sentiment = row["bear_bull_tag"] if row["bear_bull_tag"] in ("Bullish", "Bearish") \
                else None
            writer.send(topics.MESSAGES, message_event(
                int(row["message_id"]), row["t"], ["AAL"], int(row["user_id"]), sentiment))
        # another symbol, a day later, on the same (only) partition: closes every AAL window
        last = max(r["t"] for r in rows)
        writer.send(topics.MESSAGES, message_event(1, last + 86_400_000, ["ZZZZ"]))
        writer.flush()
        expected = expected_windows(rows)
        volumes = read_records(s, topics.VOLUME, expected=len(expected), timeout_s=300)
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
    got = {
        (v["window_size_ms"], v["window_start_ms"]): {
            k: v[k] for k in ("message_count", "bullish", "bearish", "unlabelled",
                              "distinct_users")
        }
        for v in volumes
        if v["symbol"] == "AAL"
    }
    assert len(volumes) == len(expected)
    assert got == expected
    assert sum(t["message_count"] for (size, _), t in expected.items() if size == 3_600_000) \
        == 14_104

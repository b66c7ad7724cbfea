"""Replays the way a user runs them: ``pulse worker`` with default settings (6 raw and 6
symbol partitions, default windows and grace), then ``pulse produce replay`` of a real history
file, or a backlog already waiting on the raw topics. Every window equals a tally computed
here from the input, and nothing is reported late."""

from __future__ import annotations

import csv
import gzip
import os
import random
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pulse.processors.windows import WindowSpec, window_starts
from pulse.producers.parse import cashtags
from pulse.schemas import topics
from pulse.settings import Settings
from tests.conftest import records_in
from tests.integration.test_processors_e2e import free_port
from tests.support.data import HISTORY
from tests.support.harness import RawWriter, message_event, read_records, settings_env

pytestmark = pytest.mark.integration

AAL = HISTORY / "AAL_20220101_20220720.csv.gz"
PULSE = str(Path(sys.executable).parent / "pulse")
M, H = 60_000, 3_600_000
# the default windows: tumbling 1m, 5m, 1h and hopping 1h/5m
SPECS = (WindowSpec(M, M), WindowSpec(5 * M, 5 * M), WindowSpec(H, H), WindowSpec(H, 5 * M))
Key = tuple[str, int, int, int]  # symbol, size, advance, start
FIELDS = ("message_count", "bullish", "bearish", "unlabelled", "distinct_users")


def default_settings(base: Settings, tmp_path: Path) -> Settings:
    """Nothing but what makes this run its own: topics, group, state, ports."""
    defaults = Settings()
    return base.replace(
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        app_id=f"replay-{uuid.uuid4().hex[:8]}",
        raw_partitions=defaults.raw_partitions,
        symbol_partitions=defaults.symbol_partitions,
        state_dir=str(tmp_path / "state"),
        web_port=free_port(),
        fan_out_port=free_port(),
        metrics_port=free_port(),
    )


def tally(messages: Iterable[tuple[str, int, int, int, str | None]]) -> dict[Key, dict[str, int]]:
    """(symbol, message id, created_at ms, user id, label) → every window's tallies."""
    tallies: dict[Key, dict[str, Any]] = defaultdict(
        lambda: {"message_count": 0, "bullish": 0, "bearish": 0, "unlabelled": 0, "users": set()}
    )
    seen: set[tuple[str, int]] = set()
    for symbol, message_id, t, user_id, label in messages:
        if (symbol, message_id) in seen:
            continue
        seen.add((symbol, message_id))
        column = {"Bullish": "bullish", "Bearish": "bearish"}.get(label or "", "unlabelled")
        for spec in SPECS:
            for start in window_starts(t, spec):
                row = tallies[(symbol, spec.size_ms, spec.advance_ms, start)]
                row["message_count"] += 1
                row[column] += 1
                row["users"].add(user_id)
    return {
        key: {**{k: v for k, v in t.items() if k != "users"}, "distinct_users": len(t["users"])}
        for key, t in tallies.items()
    }


def windows_of(volumes: list[dict[str, Any]]) -> dict[Key, dict[str, int]]:
    got: dict[Key, dict[str, int]] = {}
    for v in volumes:
        key = (v["symbol"], v["window_size_ms"], v["window_advance_ms"], v["window_start_ms"])
        assert key not in got, f"window emitted twice: {key}"
        got[key] = {k: v[k] for k in FIELDS}
    return got


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        return subprocess.Popen([PULSE, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def check_every_window(
    settings: Settings, expected: dict[Key, dict[str, int]], tmp_path: Path
) -> None:
    volumes = read_records(settings, topics.VOLUME, expected=len(expected), timeout_s=420)
    log = (tmp_path / "worker.log").read_text(errors="replace")[-3_000:]
    got = windows_of(volumes)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, (
        f"{len(got)} of {len(expected)}; missing {len(missing)}, e.g. {missing[:5]}; "
        f"unexpected {len(extra)}, e.g. {extra[:5]}\n{log}"
    )
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, f"{len(wrong)} windows differ, e.g. {list(wrong.items())[:3]}"
    # nothing late: a late event is written while its input is processed, and the last windows
    # close by the idle close, 10 s after the last input, so the topic is whole by now
    late_events = topics.LATE_EVENTS.full_name(settings)
    assert records_in(settings, late_events) == 0, read_records(settings, topics.LATE_EVENTS)


def aal_messages() -> list[tuple[str, int, int, int, str | None]]:
    """Each row once per symbol it mentions: the body's cashtags, else the file's symbol (the
    replay's documented rule, :func:`producers.parse.history_row`)."""
    with gzip.open(AAL, "rt", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        created = datetime.strptime(row["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        label = row["bear_bull_tag"] if row["bear_bull_tag"] in ("Bullish", "Bearish") else None
        for symbol in cashtags(row["text"]) or ["AAL"]:
            out.append(
                (
                    symbol,
                    int(row["message_id"]),
                    int(created.timestamp() * 1000),
                    int(row["user_id"]),
                    label,
                )
            )
    return out


@pytest.mark.skipif(not AAL.exists(), reason="real AAL history not present")
def test_pulse_produce_replay_of_real_history_with_default_settings_is_exact(
    replay_settings: Settings, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    messages = aal_messages()
    assert len({m[1] for m in messages}) == 14_104
    env = {**os.environ, **settings_env(replay_settings)}
    done = subprocess.run(
        [PULSE, "produce", "replay", str(AAL), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    check_every_window(replay_settings, tally(messages), tmp_path)
    assert worker.poll() is None


def test_synthetic_backlog_over_six_partitions_read_at_full_speed_is_exact(
    replay_settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(7)
    symbols = [f"S{i:02d}" for i in range(40)]
    t0 = 1_767_225_600_000
    writer = RawWriter(replay_settings)
    messages = []
    for i in range(200_000):  # three hours of event time, written before the worker starts
        t = t0 + i * 54 + rng.randrange(0, 40)
        picked = sorted(set(rng.choices(symbols, k=rng.choice((1, 1, 2)))))
        label = rng.choice(("Bullish", "Bearish", None))
        user_id = rng.randrange(1, 5_000)
        writer.send(topics.MESSAGES, message_event(i + 1, t, picked, user_id, label))
        messages += [(s, i + 1, t, user_id, label) for s in picked]
    writer.flush()
    proc = start_worker(replay_settings, tmp_path / "worker.log")
    try:
        check_every_window(replay_settings, tally(messages), tmp_path)
        assert proc.poll() is None
    finally:
        stop(proc)

"""Replay and synthetic producers through the `pulse produce` command, into the real Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from pulse.producers.publish import Publisher
from pulse.producers.replay import load, replay
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde
from pulse.schemas.topics import DEAD_LETTER, MESSAGES
from pulse.settings import Settings
from tests.conftest import consume
from tests.support.data import API_JSON, COLLECTOR, HISTORY

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ETH_JSON = sorted(API_JSON.glob("*.json"))
BILARDI = COLLECTOR


def pulse(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PULSE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PULSE_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "PULSE_TOPIC_PREFIX": settings.topic_prefix,
        "PULSE_RAW_PARTITIONS": str(settings.raw_partitions),
        "PULSE_METRICS_PORT": "-1",
    }
    return subprocess.run(
        [sys.executable, "-m", "pulse.cli", "produce", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
    )


def test_replay_real_rest_responses_dedups_and_dead_letters(
    settings: Settings, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"object": "Message", "action": "create", "data": {"id": 1,\n\xff\n')
    files = [str(p) for p in ETH_JSON] + [str(BILARDI / "symbol-msgs-all.json"), str(broken)]
    done = pulse(settings, "replay", "--no-progress", *files)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    expected = 74 + 6
    got = consume(settings, MESSAGES.full_name(settings), expected + 1, timeout_s=10)
    keys = Counter(m.key() for m in got)
    assert len(keys) == expected and max(keys.values()) == 1
    serde = Serde(settings)
    origins = {serde.decode(MESSAGES, m.value())["origin"] for m in got}
    assert origins == {"replay"}
    letters = consume(settings, DEAD_LETTER.full_name(settings), 2, timeout_s=10)
    assert len(letters) == 2
    assert b"replayed 80 records" in done.stdout


def test_replay_history_csv_in_event_time_order(settings: Settings) -> None:
    path = HISTORY / "ETH_20220710_20220712.csv"
    items, duplicates = load([path])
    assert duplicates == 0 and all(i.parsed is not None for i in items)
    times = [i.time_ms for i in items]
    assert times == sorted(times)
    ensure_topics(settings, (MESSAGES, DEAD_LETTER))
    publisher = Publisher(settings, "replay")
    span_s = (times[200] - times[0]) / 1000
    started = time.monotonic()
    assert replay(publisher, items[:201], speed=span_s / 1.5, progress=False) == 201
    took = time.monotonic() - started
    assert 1.2 < took < 4.0, "×N pacing keeps the original gaps, scaled"
    assert publisher.flush(30) == 0
    got = consume(settings, MESSAGES.full_name(settings), 201, timeout_s=20)
    assert len({m.key() for m in got}) == 201


def test_synthetic_command(settings: Settings) -> None:
    done = pulse(
        settings, "synthetic", "--count", "3000", "--speed", "0", "--burst", "ZQ0010@10+60x40"
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    got = consume(settings, MESSAGES.full_name(settings), 3000, timeout_s=30)
    assert len({m.key() for m in got}) == 3000
    serde = Serde(settings)
    recs = [serde.decode(MESSAGES, m.value()) for m in got[:500]]
    assert {r["origin"] for r in recs} == {"synthetic"}


def test_health_and_metrics_endpoints(settings: Settings) -> None:
    from pulse.producers.metrics import EVENTS, serve

    EVENTS.labels("test", "t").inc()
    state = {"healthy": True}
    server = serve(settings, 0, lambda: dict(state))
    assert server is not None
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert urllib.request.urlopen(f"{base}/healthz").status == 200
        body = urllib.request.urlopen(f"{base}/metrics").read()
        assert b'pulse_producer_events_total{source="test",topic="t"} 1.0' in body
        state["healthy"] = False
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"{base}/healthz")
        assert exc.value.code == 503
    finally:
        server.stop()

"""Scripted end to end: raw topics → real worker → exact volume, sentiment, spike, late records."""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulse.processors import detectors
from pulse.processors.sentiment import wilson_interval
from pulse.processors.worker import prepare
from pulse.schemas import topics
from pulse.settings import Settings
from tests.conftest import records_in
from tests.support.harness import (
    RawWriter,
    WorkerProcess,
    message_event,
    read_records,
    sentiment_event,
    wait_fanned_out,
)

pytestmark = pytest.mark.integration

M = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, aligned to the hour
GRACE = 10_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_settings(settings: Settings, tmp_path: Path, **changes: Any) -> Settings:
    """Settings of a worker of its own: app id, state dir and web port unique to the test."""
    base = dict(
        app_id=f"pulse-test-{uuid.uuid4().hex[:8]}",
        state_dir=str(tmp_path / "state"),
        web_port=free_port(),
        fan_out_port=free_port(),
        log_level="INFO",
    )
    return settings.replace(**{**base, **changes})


@pytest.fixture
def e2e_settings(settings: Settings, tmp_path: Path) -> Settings:
    s = worker_settings(
        settings,
        tmp_path,
        raw_partitions=1,
        symbol_partitions=1,  # one partition: input order is the script's
        windows="1m",
        hopping_windows="2m/1m",
        grace_ms=GRACE,
        idle_close_s=600.0,
        raw_idle_ms=500,
        spike_windows="1m",
        spike_warmup_windows=5,
        spike_min_count=8,
        spike_z=3.0,
        spike_cooldown_windows=2,
        spike_alpha=0.2,
        surge_window="",  # no hour-scale detector: the script spans minutes
    )
    prepare(s)
    return s


@pytest.fixture
def worker(e2e_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(e2e_settings, tmp_path / "worker.log").start()
    yield w
    w.stop()


def script(writer: RawWriter) -> dict[str, Any]:
    """The scripted input; returns facts the assertions need.

    The watermark moves once per mention batch, after the batch's mentions. The script is
    written in phases, each read by the fan-out before the next is written, so that "in
    grace" and "late" do not depend on where the fan-out's batches happen to end."""
    msg, sent = topics.MESSAGES, topics.RAW_SENTIMENT
    w = writer.send

    def phase() -> None:
        # read by the fan-out, and every raw partition idle again: the sentiment partition
        # (three early scores) no longer holds the watermark back, the next phase moves it
        writer.flush()
        wait_fanned_out(writer.settings, timeout_s=90)
        time.sleep(writer.settings.raw_idle_ms / 1000 + 1.0)

    w(sent, sentiment_event(2, T0 + 2_000, ["AAPL"], 0.5))
    w(sent, sentiment_event(2, T0 + 2_000, ["AAPL"], 0.5))  # duplicate score
    w(sent, sentiment_event(3, T0 + 3_000, ["AAPL"], -0.25))
    # window 0: a two-symbol message (sent twice), a repeated symbol, labels
    w(msg, message_event(1, T0 + 1_000, ["AAPL", "TSLA", "AAPL"], user_id=1, sentiment="Bullish"))
    w(msg, message_event(1, T0 + 1_000, ["AAPL", "TSLA"], user_id=1, sentiment="Bullish"))
    w(msg, message_event(2, T0 + 2_000, ["AAPL"], user_id=2, sentiment="Bearish"))
    w(msg, message_event(3, T0 + 3_000, ["AAPL"], user_id=1))
    # window 1: m4 destroyed while open; m5 destroyed after its window was emitted
    w(msg, message_event(4, T0 + M + 1_000, ["AAPL"], user_id=3, sentiment="Bullish"))
    w(msg, message_event(5, T0 + M + 20_000, ["AAPL", "TSLA"], user_id=4))
    w(
        msg,
        message_event(
            4, T0 + M + 1_000, [], action="destroy", body=False, event_time_ms=T0 + M + 25_000
        ),
    )
    phase()
    w(msg, message_event(7, T0 + 2 * M + 5_000, ["AAPL"], user_id=6))  # watermark 2M-5s
    phase()
    w(msg, message_event(6, T0 + M + 58_000, ["AAPL"], user_id=5, sentiment="Bearish"))  # in grace
    phase()
    w(msg, message_event(8, T0 + 2 * M + 15_000, ["AAPL"], user_id=7))  # closes window 1
    phase()
    w(msg, message_event(9, T0 + M + 30_000, ["AAPL"], user_id=8))  # beyond grace: late
    w(
        msg,
        message_event(
            5, T0 + M + 20_000, [], action="destroy", body=False, event_time_ms=T0 + 2 * M + 16_000
        ),
    )
    writer.send_bytes(msg, b"bad", b"\x00not avro at all")
    # steady AAPL traffic, a 2-window burst, calm again
    next_id = 100
    counts = {2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 20, 10: 20, 11: 2, 12: 2}
    for window, n in counts.items():
        for i in range(n - (2 if window == 2 else 0)):  # window 2 already has m7, m8
            w(
                msg,
                message_event(
                    next_id, T0 + window * M + 30_000 + i * 100, ["AAPL"], user_id=1000 + i
                ),
            )
            next_id += 1
    # far in the future, another symbol: pushes the watermark past everything above
    w(msg, message_event(99_999, T0 + 3_600_000, ["ZZZZ"], user_id=9))
    writer.flush()
    return {"counts": counts}


def test_scripted_events_give_exact_records(e2e_settings: Settings, worker: WorkerProcess) -> None:
    facts = script(RawWriter(e2e_settings))
    volumes = read_records(e2e_settings, topics.VOLUME, idle_s=8, timeout_s=120)
    assert worker.alive(), worker.log_tail()
    sentiments = read_records(
        e2e_settings, topics.SENTIMENT_WINDOWS, expected=len(volumes), timeout_s=30
    )

    # the spike, the late event and the dead letter were written before the last windows
    # (their input came first, or in the same batch): read every record those topics now hold
    def all_of(spec: topics.TopicSpec) -> list[dict[str, Any]]:
        held = records_in(e2e_settings, spec.full_name(e2e_settings))
        return read_records(e2e_settings, spec, expected=held, timeout_s=15)

    spike_records, late, dead = (
        all_of(topics.SPIKES),
        all_of(topics.LATE_EVENTS),
        all_of(topics.DEAD_LETTER),
    )

    def strip(rec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in rec.items() if k != "emitted_at_ms"}

    one_minute = {
        (r["symbol"], r["window_start_ms"] - T0, r["revision"]): strip(r)
        for r in volumes
        if r["window_size_ms"] == M
    }
    # each (symbol, window size, advance, start, revision) exactly once
    keys = Counter(
        (
            r["symbol"],
            r["window_size_ms"],
            r["window_advance_ms"],
            r["window_start_ms"],
            r["revision"],
        )
        for r in volumes
    )
    assert max(keys.values()) == 1

    def vol(
        symbol: str,
        start: int,
        count: int,
        users: int,
        bull: int,
        bear: int,
        unl: int,
        revision: int = 0,
        size: int = M,
    ) -> dict[str, Any]:
        return {
            "symbol": symbol,
            "window_start_ms": T0 + start,
            "window_end_ms": T0 + start + size,
            "window_size_ms": size,
            "window_advance_ms": M,
            "message_count": count,
            "distinct_users": users,
            "bullish": bull,
            "bearish": bear,
            "unlabelled": unl,
            "revision": revision,
        }

    assert one_minute[("AAPL", 0, 0)] == vol("AAPL", 0, 3, 2, 1, 1, 1)
    assert one_minute[("TSLA", 0, 0)] == vol("TSLA", 0, 1, 1, 1, 0, 0)
    # m4 destroyed before the close; m6 in grace; m9 beyond grace not counted
    assert one_minute[("AAPL", M, 0)] == vol("AAPL", M, 2, 2, 0, 1, 1)
    assert one_minute[("TSLA", M, 0)] == vol("TSLA", M, 1, 1, 0, 0, 1)
    # m5 destroyed after emission: corrected results, revision 1
    assert one_minute[("AAPL", M, 1)] == vol("AAPL", M, 1, 1, 0, 1, 0, revision=1)
    assert one_minute[("TSLA", M, 1)] == vol("TSLA", M, 0, 0, 0, 0, 0, revision=1)
    assert ("AAPL", M, 2) not in one_minute
    # steady and burst windows, each once
    for window, n in facts["counts"].items():
        assert one_minute[("AAPL", window * M, 0)]["message_count"] == n
    assert not any(sym == "ZZZZ" for sym, _, _ in one_minute)  # its window is still open
    assert len(one_minute) == 2 * 2 + 2 + len(facts["counts"])

    # hopping 2m/1m: the whole two minutes, not the last step
    hop = {
        (r["symbol"], r["window_start_ms"] - T0, r["revision"]): r["message_count"]
        for r in volumes
        if r["window_size_ms"] == 2 * M
    }
    assert hop[("AAPL", 0, 0)] == 3 + 2
    assert hop[("AAPL", 0, 1)] == 3 + 1
    assert hop[("AAPL", -M, 0)] == 3
    assert hop[("AAPL", 8 * M, 0)] == 2 + 20
    assert hop[("TSLA", 0, 0)] == 2 and hop[("TSLA", 0, 1)] == 1

    # sentiment: Wilson interval and the /sentiment score mean, same windows as volume
    sent = {
        (r["symbol"], r["window_size_ms"], r["window_start_ms"] - T0, r["revision"]): r
        for r in sentiments
    }
    assert len(sent) == len(volumes)
    w0 = sent[("AAPL", M, 0, 0)]
    low, high = wilson_interval(1, 2)  # type: ignore[misc]
    assert (w0["bullish"], w0["bearish"], w0["bullish_ratio"]) == (1, 1, 0.5)
    assert w0["bullish_ratio_low"] == pytest.approx(low)
    assert w0["bullish_ratio_high"] == pytest.approx(high)
    assert w0["sentiment_score_count"] == 2
    assert w0["sentiment_score_mean"] == pytest.approx(0.125)
    assert sent[("TSLA", M, 0, 0)]["sentiment_score_count"] == 0
    assert sent[("TSLA", M, 0, 0)]["sentiment_score_mean"] is None

    # spike: exactly one, for the first burst window (a BURST of distinct users); the
    # detectors fed the same windows (revision 0, messages and users) independently
    assert len(spike_records) == 1, spike_records
    spike = spike_records[0]
    assert (spike["symbol"], spike["window_start_ms"]) == ("AAPL", T0 + 9 * M)
    rule = detectors.rule_from_settings(e2e_settings)
    assert rule.burst_sizes_ms == (M,) and rule.surge_size_ms is None
    assert rule.scored is detectors.Scored.USERS
    state = detectors.DetectorState()
    verdicts = {}
    for window in range(0, 13):
        first = one_minute[("AAPL", window * M, 0)]
        verdicts[window] = detectors.observe(
            state, T0 + window * M, M, first["message_count"], first["distinct_users"], rule
        )
    assert [w for w, v in verdicts.items() if v is not None] == [9]
    fields = verdicts[9].record_fields()  # type: ignore[union-attr]
    assert {k: spike[k] for k in fields} == pytest.approx(fields)
    assert (spike["kind"], spike["scored"], spike["count"], spike["distinct_users"]) == (
        "BURST",
        "USERS",
        20,
        20,
    )
    assert spike["sample_message_ids"] == sorted(spike["sample_message_ids"])
    assert len(spike["sample_message_ids"]) == 5

    # late beyond grace: reported with its lateness, never silently dropped
    assert [(x["mention"]["message_id"], x["mention"]["symbol"]) for x in late] == [(9, "AAPL")]
    assert late[0]["lateness_ms"] == (T0 + 2 * M + 15_000 - GRACE) - (T0 + M + 30_000)
    # the undecodable record went to the dead-letter topic; the worker kept going
    assert [(d["reason"], d["stage"], d["raw"]) for d in dead] == [
        ("decode_failed", "fan-out", b"\x00not avro at all")
    ]

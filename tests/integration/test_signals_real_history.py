"""The spikes of a real history, end to end: ``pulse worker`` with default settings and
``pulse produce replay`` of the AAL history (2022-01..07) put on ``pulse.spikes`` exactly the
alerts the evaluation (``bench/evaluate.py``: its windows, fed to ``detectors.observe``)
predicts for that file — both earnings mornings among them."""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from bench import evaluate
from pulse.processors import detectors
from pulse.schemas import topics
from pulse.settings import Settings
from tests.integration.test_processors_replay import (
    AAL,
    PULSE,
    aal_messages,
    check_every_window,
    tally,
)
from tests.support.harness import read_records, settings_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not AAL.exists(), reason="real AAL history not present"),
]

Alert = tuple[Any, ...]


def alert_key(
    symbol: str, start_ms: int, size_ms: int, v: dict[str, Any], approx: bool = False
) -> Alert:
    """What must agree between the evaluation and the pipeline (floats to 1e-9 when
    ``approx``: the expected side)."""
    floats = [v["scored_count"], v["expected_count"], v["p_value"]]
    return (
        symbol,
        start_ms,
        size_ms,
        v["kind"],
        v["count"],
        v["distinct_users"],
        v["scored"],
        v["span_ms"],
        v["severity"],
        *(pytest.approx(f, rel=1e-9) if approx else f for f in floats),
    )


def predicted(rule: detectors.DetectorRule) -> list[Alert]:
    """The evaluation's alerts for every symbol the replay of the file produces (its
    messages counted per cashtag, as the replay producer does), oldest window first."""
    per_symbol: dict[str, dict[int, evaluate.Msg]] = defaultdict(dict)
    for symbol, message_id, t, user_id, _ in aal_messages():
        per_symbol[symbol][message_id] = evaluate.Msg(t, user_id, message_id)
    sizes = [*rule.burst_sizes_ms, *([rule.surge_size_ms] if rule.surge_size_ms else [])]
    alerts = []
    for symbol, by_id in per_symbol.items():
        msgs = sorted(by_id.values(), key=lambda m: m.created_ms)
        for end, v in evaluate.run(evaluate.tally(msgs, sizes), rule):
            size = v.span_ms if v.kind is detectors.Kind.BURST else rule.surge_size_ms
            assert size is not None
            alerts.append(alert_key(symbol, end - size, size, v.record_fields(), approx=True))
    return sorted(alerts, key=lambda a: (a[1], a[2], a[0]))


def test_replayed_history_gives_the_spikes_the_evaluation_predicts(
    replay_settings: Settings, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    rule = detectors.rule_from_settings(replay_settings)
    assert rule == detectors.rule_from_settings(Settings())  # the shipped defaults
    expected = predicted(rule)
    # the evaluation command's own reading of the file agrees for the file's symbol
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / AAL.name).symlink_to(AAL)
    data = evaluate.load(tmp_path / "history")
    by_command = evaluate.run(evaluate.tally(data["AAL"], [300_000, 3_600_000]), rule)
    assert [(e, v.kind.value) for e, v in by_command] == [
        (a[1] + a[2], a[3]) for a in expected if a[0] == "AAL"
    ]
    found = evaluate.summarise("AAL", data["AAL"], by_command).found
    assert all(found.values()) and len(found) == 2, found  # both earnings mornings

    env = {**os.environ, **settings_env(replay_settings)}
    done = subprocess.run(
        [PULSE, "produce", "replay", str(AAL), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # every window closed, exact, nothing late: then every spike has been published
    check_every_window(replay_settings, tally(aal_messages()), tmp_path)
    records = read_records(replay_settings, topics.SPIKES, idle_s=3, timeout_s=30)
    got = sorted(
        (alert_key(r["symbol"], r["window_start_ms"], r["window_size_ms"], r) for r in records),
        key=lambda a: (a[1], a[2], a[0]),
    )
    print(
        f"\n{len(got)} spikes from the pipeline, {len(expected)} predicted: "
        + ", ".join(f"{a[0]} {a[3]} {a[1]}" for a in got)
    )
    assert got == expected
    assert worker.poll() is None

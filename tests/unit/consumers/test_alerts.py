from __future__ import annotations

import json
import random
from typing import Any

import pytest

from consumers.alerts import (
    Verdict,
    alert_id,
    alert_payload,
    classify,
    redact,
    retry_delay_s,
    webhook_urls,
)
from producers.backoff import Backoff
from settings import Settings

SPIKE: dict[str, Any] = {
    "symbol": "GME", "window_start_ms": 1_700_000_040_000, "window_end_ms": 1_700_000_100_000,
    "window_size_ms": 60_000, "count": 42, "expected_count": 4.2, "score": 8.25,
    "p_value": 1e-9, "ratio": 10.0, "bullish_ratio": 0.8, "sample_message_ids": [1, 2],
    "severity": "HIGH", "detected_at_ms": 1_700_000_101_000,
}  # fmt: skip


def test_payload_carries_the_spike_an_id_and_a_readable_line() -> None:
    body = alert_payload(SPIKE)
    assert body["type"] == "pulse.spike"
    assert body["id"] == "GME:60000:1700000040000"
    assert body["spike"] == SPIKE
    assert body["window_start"] == "2023-11-14T22:14:00Z"
    assert body["window_end"] == "2023-11-14T22:15:00Z"
    assert body["text"] == (
        "$GME: 42 messages in 1m from 2023-11-14T22:14:00Z — 10.0× the expected 4.2 (z=8.2, HIGH)"
    )
    json.dumps(body)  # serialisable as is


def test_the_same_window_of_the_same_symbol_is_one_alert() -> None:
    again = {**SPIKE, "count": 43, "detected_at_ms": 1}
    assert alert_id(again) == alert_id(SPIKE)
    assert alert_id({**SPIKE, "window_size_ms": 300_000}) != alert_id(SPIKE)


@pytest.mark.parametrize(
    "status, verdict",
    [(200, Verdict.OK), (204, Verdict.OK), (408, Verdict.RETRY), (429, Verdict.RETRY),
     (500, Verdict.RETRY), (503, Verdict.RETRY), (400, Verdict.FAIL), (401, Verdict.FAIL),
     (404, Verdict.FAIL), (301, Verdict.FAIL)],
)  # fmt: skip
def test_classify(status: int, verdict: str) -> None:
    assert classify(status) == verdict


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    b = Backoff(0.5, 4.0, random.Random(7))
    delays = [retry_delay_s(b, None, 0.0, 4.0) for _ in range(6)]
    for n, d in enumerate(delays):
        ceiling = min(4.0, 0.5 * 2**n)
        assert ceiling / 2 <= d <= ceiling
    assert delays[-1] >= 2.0  # at the cap


def test_retry_after_from_the_server_wins_but_is_capped() -> None:
    b = Backoff(0.5, 30.0, random.Random(1))
    assert retry_delay_s(b, {"Retry-After": "7"}, 0.0, 30.0) == 7.0
    assert retry_delay_s(b, {"Retry-After": "3600"}, 0.0, 30.0) == 30.0
    assert 0.25 <= retry_delay_s(Backoff(0.5, 30.0), {"Other": "1"}, 0.0, 30.0) <= 0.5


def test_webhook_urls_from_settings_and_flags_without_duplicates() -> None:
    s = Settings(alert_webhook_urls=" http://a/x , ,http://b/y")
    assert webhook_urls(s, ["http://b/y", "http://c/z"]) == [
        "http://a/x",
        "http://b/y",
        "http://c/z",
    ]
    assert webhook_urls(Settings()) == []


def test_redact_keeps_only_scheme_host_and_port() -> None:
    assert (
        redact("https://hooks.example.com/services/T0/B0/secret?x=1") == "https://hooks.example.com"
    )
    assert redact("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080"


def test_webhook_urls_are_secret_in_settings_repr() -> None:
    assert "secret" not in repr(Settings(alert_webhook_urls="https://h/secret"))

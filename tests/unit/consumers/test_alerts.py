from __future__ import annotations

import json
import random
from typing import Any

import pytest

from pulse.backoff import Backoff
from pulse.consumers.alerts import (
    Outcome,
    alert_id,
    alert_payload,
    chat_escape,
    classify,
    idempotency_key,
    liveness_budget_s,
    post_with_retries,
    redact,
    retry_budget_s,
    retry_delay_s,
    scrub,
    url_problem,
    webhook_urls,
)
from pulse.settings import Settings

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
    assert body["text"] == (  # a record without kind/scored/span: a message count, a BURST
        "$GME: 42 messages in 1m from 2023-11-14T22:14:00Z — 10.0× the expected 4.2 "
        "(BURST, z=8.2, HIGH)"
    )
    json.dumps(body)  # serialisable as is


def test_the_line_says_what_the_detector_scored_over_its_span() -> None:
    surge = {**SPIKE, "window_start_ms": 1_700_002_800_000, "window_end_ms": 1_700_006_400_000,
             "window_size_ms": 3_600_000, "kind": "SURGE", "scored": "USERS",
             "scored_count": 31.0, "span_ms": 3 * 3_600_000, "expected_count": 6.2,
             "ratio": 5.0, "score": 5.1, "count": 57}  # fmt: skip
    assert alert_payload(surge)["text"] == (
        "$GME: 31 users in 3h from 2023-11-14T21:00:00Z — 5.0× the expected 6.2 "
        "(SURGE, z=5.1, HIGH); 57 messages in the 1h window"
    )


def test_the_same_window_of_the_same_symbol_is_one_alert() -> None:
    again = {**SPIKE, "count": 43, "detected_at_ms": 1}
    assert alert_id(again) == alert_id(SPIKE)
    assert alert_id({**SPIKE, "window_size_ms": 300_000}) != alert_id(SPIKE)


@pytest.mark.parametrize(
    "status, verdict",
    [(200, Outcome.OK), (204, Outcome.OK), (408, Outcome.RETRY), (429, Outcome.RETRY),
     (500, Outcome.RETRY), (503, Outcome.RETRY), (400, Outcome.FAIL), (401, Outcome.FAIL),
     (404, Outcome.FAIL), (301, Outcome.FAIL)],
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
        redact("https://hooks.example.com/services/T0/B0/secret?x=1")
        == "https://hooks.example.com/…"
    )
    assert redact("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/…"


def test_redact_never_raises_on_a_port_out_of_range() -> None:
    assert redact("http://hooks.example.com:99999/T0/s3cret") == "http://hooks.example.com:99999/…"


@pytest.mark.parametrize(
    "url, problem",
    [("https://hooks.example.com/T/s3cret", None), ("http://127.0.0.1:8080/x", None),
     ("http://h:99999/s3cret", "Port out of range 0-65535"),
     ("ftp://h/s3cret", "not an http(s) URL"),
     ("hooks.example.com/s3cret", "not an http(s) URL"), ("http:///s3cret", "no host")],
)  # fmt: skip
def test_url_problem_says_why_without_the_url(url: str, problem: str | None) -> None:
    assert url_problem(url) == problem


def test_pulse_alerts_refuses_an_invalid_webhook_in_one_line_without_its_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pulse.consumers import alerts

    code = alerts.run(Settings(alert_webhook_urls="http://h:99999/T0/s3cret"), [])
    err = capsys.readouterr().err
    assert code == 2 and "s3cret" not in err and len(err.strip().splitlines()) == 1
    assert "http://h:99999/… is invalid (Port out of range" in err


def test_scrub_redacts_every_url_in_an_error_message() -> None:
    url = "https://hooks.example.com/services/T0/s3cret"
    msg = f"ClientResponseError: 500, url='{url}?a=1' (see also http://other/s3cret2)"
    out = scrub(msg, [url])
    assert "s3cret" not in out and "https://hooks.example.com/…" in out


async def test_an_invalid_url_is_final_and_its_token_stays_out_of_the_error() -> None:
    import aiohttp

    async def never(_: float) -> None:
        raise AssertionError("an invalid URL is not retried")

    async with aiohttp.ClientSession() as session:
        d = await post_with_retries(
            session, "http://127.0.0.1:99999/T0/s3cret", alert_payload(SPIKE),
            max_attempts=5, backoff=Backoff(0.01, 0.01), cap_s=0.01, sleep=never,
        )  # fmt: skip
    assert not d.ok and d.attempts == 1 and "s3cret" not in d.error


HOSTILE = ["[/]", "\x1b[31mRED\x1b]8;;http://evil\x07", "<!channel>", "<https://x|AAPL>",
           "[link=http://evil]AAPL[/link]", "A&B", "Z" * 5000, "\u202eLPAA",
           "a\r\nX-Evil: 1"]  # fmt: skip


@pytest.mark.parametrize("symbol", HOSTILE)
def test_a_hostile_symbol_cannot_mention_link_or_flood_in_the_alert_text(symbol: str) -> None:
    body = alert_payload({**SPIKE, "symbol": symbol})
    text = body["text"]
    assert "<" not in text and ">" not in text  # no <!channel>, no <url|label>
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text)  # no ESC, no CR/LF
    assert "\u202e" not in text
    assert len(text) < 200
    assert body["spike"]["symbol"] == symbol  # the record itself is data, kept as it was
    key = idempotency_key(body["id"])
    assert key.isascii() and key.isprintable() and len(key) <= 200
    json.dumps(body)


def test_chat_escape() -> None:
    assert chat_escape("<!channel> & <https://x|AAPL>") == (
        "&lt;!channel&gt; &amp; &lt;https://x|AAPL&gt;"
    )
    assert alert_payload({**SPIKE, "symbol": "<!channel>"})["text"].startswith("$&lt;!channel&gt;:")


def test_idempotency_key_is_the_id_when_plain() -> None:
    assert idempotency_key("GME:60000:1700000040000") == "GME:60000:1700000040000"
    assert idempotency_key("a\r\nb:1:2").startswith("sha256:")


@pytest.mark.parametrize(
    "settings",
    [Settings(), Settings(alert_max_attempts=20, alert_backoff_max_s=120, alert_timeout_s=30),
     Settings(alert_max_attempts=1, alert_timeout_s=1, alert_backoff_max_s=0.1)],
)  # fmt: skip
def test_liveness_budget_covers_the_whole_retry_budget(settings: Settings) -> None:
    # defaults: 6 attempts × 10 s + 5 waits × 30 s = 210 s for one spike
    budget = retry_budget_s(settings)
    attempts = settings.alert_max_attempts
    assert budget >= attempts * settings.alert_timeout_s + (attempts - 1) * min(
        settings.alert_backoff_max_s, 30.0
    )
    assert liveness_budget_s(settings) >= budget
    if settings == Settings():
        assert budget == 210 and liveness_budget_s(settings) > 210


def test_a_slow_webhook_is_healthy_a_silent_loop_is_not() -> None:
    from pulse.consumers.alerts import AlertConsumer

    alerts = AlertConsumer.__new__(AlertConsumer)  # the health rule only, no clients
    alerts.liveness_s = liveness_budget_s(Settings())
    alerts.last_poll = 1000.0
    # one spike to a webhook answering 429 with Retry-After: 30 six times, every wait capped
    assert alerts.healthy(now=1000.0 + 6 * 10 + 5 * 30)
    assert not alerts.healthy(now=1000.0 + alerts.liveness_s + 1)


def test_webhook_urls_are_secret_in_settings_repr() -> None:
    assert "secret" not in repr(Settings(alert_webhook_urls="https://h/secret"))

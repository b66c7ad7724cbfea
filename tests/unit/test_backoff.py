"""pulse.backoff: delays grow, are capped, jittered, and follow rate-limit headers."""

from __future__ import annotations

import random

import pytest

from pulse.backoff import Backoff, retry_after_s, throttle_s


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(base_s=1.0, cap_s=10.0, rng=random.Random(1))
    delays = [b.next() for _ in range(8)]
    for n, d in enumerate(delays):
        full = min(10.0, 2.0**n)
        assert full / 2 <= d <= full
    assert max(delays) <= 10.0 and delays[-1] >= 5.0
    b.reset()
    assert 0.5 <= b.next() <= 1.0


def test_backoff_is_jittered() -> None:
    b1, b2 = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    assert [b1.next() for _ in range(5)] != [b2.next() for _ in range(5)]


@pytest.mark.parametrize(
    "headers, wait",
    [
        ({"Retry-After": "7"}, 7.0),
        ({"X-RateLimit-Reset": "1030"}, 30.0),
        ({"X-RateLimit-Reset": "900"}, 0.0),
        ({"Retry-After": "x"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], wait: float | None) -> None:
    assert retry_after_s(headers, now_s=1000.0) == wait


@pytest.mark.parametrize(
    "remaining, reset, wait",
    [
        ("0", "1060", 60.0),
        ("10", "1100", 10.0),
        ("400", "1100", 1.0),
        (None, None, 1.0),
        ("5", "990", 1.0),
    ],
)
def test_throttle(remaining: str | None, reset: str | None, wait: float) -> None:
    headers = {}
    if remaining is not None and reset is not None:
        headers = {"X-RateLimit-Remaining": remaining, "X-RateLimit-Reset": reset}
    assert throttle_s(headers, now_s=1000.0, min_interval_s=1.0) == wait

from __future__ import annotations

import math

import pytest

from pulse.processors.sentiment import (
    Z95,
    bullish_ratio,
    user_sentiment,
    user_votes,
    wilson_interval,
)


def quadratic_bounds(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson bounds as the roots of (k/n - p)^2 = z^2 p (1 - p) / n, solved for p."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("k, n", [(1, 2), (0, 10), (10, 10), (1_500, 2_000), (3, 7)])
def test_wilson_interval_solves_the_score_equation(k: int, n: int) -> None:
    interval = wilson_interval(k, n)
    low, high = quadratic_bounds(k, n)
    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=1e-9)
    assert interval[1] == pytest.approx(high, abs=1e-9)


def test_wilson_interval_known_value() -> None:
    # 0 of 10: the upper bound is z^2 / (n + z^2)
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z95**2 / (10 + Z95**2)))


def test_wilson_interval_narrows_with_more_labels() -> None:
    small, large = wilson_interval(1, 2), wilson_interval(1_000, 2_000)
    assert small is not None and large is not None
    assert (small[1] - small[0]) > 10 * (large[1] - large[0])


def test_no_labels_no_interval() -> None:
    assert wilson_interval(0, 0) is None
    assert bullish_ratio(0, 0) is None
    assert bullish_ratio(3, 1) == 0.75


def test_each_user_votes_once_by_their_majority() -> None:
    labels = [(1, "Bullish")] * 11 + [(1, "Bearish")] * 2  # one loud user: one bull vote
    labels += [(2, "Bearish"), (3, "Bearish"), (4, "Bullish"), (4, "Bearish")]  # 4 ties
    labels += [(5, None), (None, "Bullish"), (None, "Bullish")]  # anonymous: one vote each
    assert user_votes(labels) == (3, 2)


@pytest.mark.parametrize("bull, bear", [(3, 2), (0, 4), (7, 0), (120, 45)])
def test_user_interval_is_the_textbook_wilson_interval(bull: int, bear: int) -> None:
    labels = [(i, "Bullish") for i in range(bull)]
    labels += [(10_000 + i, "Bearish") for i in range(bear)] + [(0, "Bullish")] * 5 * (bull > 0)
    s = user_sentiment(labels)
    n = bull + bear
    p = bull / n
    # textbook: (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    assert (s.bullish, s.bearish) == (bull, bear)
    assert s.ratio == pytest.approx(p)
    assert s.low == pytest.approx(centre - half, abs=1e-12)
    assert s.high == pytest.approx(centre + half, abs=1e-12)
    assert (s.low, s.high) == pytest.approx(quadratic_bounds(bull, n), abs=1e-9)


def test_one_loud_user_cannot_tilt_the_per_user_ratio() -> None:
    labels = [(1, "Bullish")] * 11 + [(u, "Bearish") for u in range(2, 17)]
    assert bullish_ratio(11, 15) == pytest.approx(0.42, abs=0.01)  # per message
    s = user_sentiment(labels)
    assert s.ratio == pytest.approx(1 / 16)
    assert s.record_fields() == {
        "user_bullish": 1,
        "user_bearish": 15,
        "user_bullish_ratio": s.ratio,
        "user_bullish_ratio_low": s.low,
        "user_bullish_ratio_high": s.high,
    }
    assert user_sentiment([(1, None)]).record_fields()["user_bullish_ratio"] is None

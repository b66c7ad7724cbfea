from __future__ import annotations

import math

import pytest

from processors.sentiment import Z95, bullish_ratio, wilson_interval


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

"""Pure sentiment maths: bullish ratio with a 95 % Wilson score interval."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; None with no trials.

    Unlike ``p ± z·se`` it stays inside [0, 1] and widens for small samples, so a symbol
    with 2 labels does not look as certain as one with 2,000.
    """
    if trials <= 0:
        return None
    p = successes / trials
    z2 = z * z
    denom = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def bullish_ratio(bullish: int, bearish: int) -> float | None:
    """bullish / (bullish + bearish); None when no message carries a label."""
    labelled = bullish + bearish
    return bullish / labelled if labelled else None

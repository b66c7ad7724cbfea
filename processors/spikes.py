"""Pure spike detection: a per-symbol baseline of window volume and the rule that fires.

The baseline is an EWMA of the mean and variance of ``sqrt(count)``. The square root
roughly stabilises Poisson variance (≈ 1/4 whatever the rate), so one z threshold works for
quiet and busy symbols alike; the EWMA variance also learns real over-dispersion. Windows in
which a symbol had no mention are never emitted, so the gap between two observed windows is
fed to the baseline as zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Poisson: Var(sqrt X) ≈ 1/4; never trust a baseline that claims to be steadier than that
VAR_FLOOR = 0.25
# a gap of more than this many empty windows is fed as this many zeros (the EWMA has
# forgotten everything before by then anyway)
MAX_GAP_WINDOWS = 2_000


class Severity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


@dataclass(frozen=True)
class SpikeRule:
    """Detector thresholds (from Settings; defaults justified in docs/processors.md)."""

    min_count: int = 10
    z: float = 4.0
    cooldown_windows: int = 3
    warmup_windows: int = 12
    alpha: float = 0.05
    regime_windows: int = 12  # after this many elevated windows in a row, accept the level


@dataclass
class Baseline:
    """One symbol's baseline for one window size (JSON-able table state)."""

    n: int = 0  # windows observed (zeros included)
    mean_sqrt: float = 0.0
    var_sqrt: float = 0.0
    mean_count: float = 0.0
    last_start_ms: int | None = None
    last_elevated_ms: int | None = None
    elevated_run: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean_sqrt": self.mean_sqrt,
            "var_sqrt": self.var_sqrt,
            "mean_count": self.mean_count,
            "last_start_ms": self.last_start_ms,
            "last_elevated_ms": self.last_elevated_ms,
            "elevated_run": self.elevated_run,
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Baseline:
        return cls(**row)


@dataclass(frozen=True)
class WindowScore:
    """The scoring of one window against the baseline before it."""

    count: int
    expected_count: float
    score: float  # z of sqrt(count)
    p_value: float
    ratio: float
    fired: bool
    severity: Severity


def _learn(b: Baseline, count: int, alpha: float) -> None:
    x = math.sqrt(count)
    if b.n == 0:
        b.mean_sqrt, b.var_sqrt, b.mean_count = x, 0.0, float(count)
    else:
        d = x - b.mean_sqrt
        b.mean_sqrt += alpha * d
        b.var_sqrt = (1 - alpha) * (b.var_sqrt + alpha * d * d)
        b.mean_count += alpha * (count - b.mean_count)
    b.n += 1


def poisson_sf(count: int, lam: float) -> float:
    """P(X ≥ count) for X ~ Poisson(lam)."""
    if count <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    if count > 5_000:  # normal approximation with continuity correction
        z = (count - 0.5 - lam) / math.sqrt(lam)
        return 0.5 * math.erfc(z / math.sqrt(2))
    # 1 - P(X < count), summed in log space
    log_lam = math.log(lam)
    cdf = 0.0
    for k in range(count):
        cdf += math.exp(k * log_lam - lam - math.lgamma(k + 1))
    if cdf < 0.5:
        return 1.0 - cdf
    # upper tail directly, for precision when it is tiny
    sf, k = 0.0, count
    while True:
        term = math.exp(k * log_lam - lam - math.lgamma(k + 1))
        sf += term
        if term < sf * 1e-15 or k > count + 100_000:
            return sf
        k += 1


def severity(z: float, rule: SpikeRule) -> Severity:
    if z >= 2 * rule.z:
        return Severity.HIGH
    if z >= 1.5 * rule.z:
        return Severity.MEDIUM
    return Severity.LOW


def observe(
    b: Baseline,
    start_ms: int,
    size_ms: int,
    count: int,
    rule: SpikeRule,
    profile_count: float | None = None,
) -> WindowScore:
    """Score one closed window of a symbol, then update the baseline in place.

    :param profile_count: what this time of day usually has (from the surge detector's
        hour-of-day profile); the window is scored against the larger of it and the EWMA,
        so the EWMA lagging a daily ramp (the market open) is not a burst.

    A spike needs a warm baseline, ``count ≥ min_count`` and ``z ≥ rule.z``; it fires only
    if no elevated window was seen in the last ``cooldown_windows`` windows, so one burst
    fires once however long it lasts. Elevated windows are kept out of the baseline until
    ``regime_windows`` of them in a row say the level really changed.
    """
    if b.last_start_ms is not None:
        gap = (start_ms - b.last_start_ms) // size_ms - 1
        for _ in range(max(0, min(gap, MAX_GAP_WINDOWS))):
            _learn(b, 0, rule.alpha)
            b.elevated_run = 0
    sd = math.sqrt(max(b.var_sqrt, VAR_FLOOR))
    centre, expected = b.mean_sqrt, max(b.mean_count, 1e-9)
    if profile_count is not None and math.sqrt(profile_count) > centre:
        centre, expected = math.sqrt(profile_count), max(profile_count, 1e-9)
    z = (math.sqrt(count) - centre) / sd if b.n else 0.0
    elevated = b.n >= rule.warmup_windows and count >= rule.min_count and z >= rule.z
    fired = False
    if elevated:
        quiet_since = (
            None if b.last_elevated_ms is None else (start_ms - b.last_elevated_ms) // size_ms
        )
        fired = quiet_since is None or quiet_since > rule.cooldown_windows
        b.last_elevated_ms = start_ms
        b.elevated_run += 1
        if b.elevated_run > rule.regime_windows:
            _learn(b, count, rule.alpha)
    else:
        b.elevated_run = 0
        _learn(b, count, rule.alpha)
    b.last_start_ms = start_ms
    return WindowScore(
        count=count,
        expected_count=expected,
        score=z,
        p_value=poisson_sf(count, expected) if elevated else 1.0,
        ratio=count / expected,
        fired=fired,
        severity=severity(z, rule),
    )

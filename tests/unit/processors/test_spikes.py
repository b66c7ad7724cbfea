from __future__ import annotations

import math
import random

import pytest

from pulse.processors.spikes import Baseline, Severity, SpikeRule, observe, poisson_sf

W = 300_000
RULE = SpikeRule()  # the shipped defaults


def poisson(rng: random.Random, lam: float) -> int:
    # Knuth; fine for the rates used here
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def run(counts: list[int], rule: SpikeRule = RULE) -> list[int]:
    baseline = Baseline()
    return [i for i, c in enumerate(counts) if observe(baseline, i * W, W, c, rule).fired]


@pytest.mark.parametrize(
    "count, lam, expected",
    [(0, 3.0, 1.0), (1, 3.0, 1 - math.exp(-3.0)), (3, 3.0, 1 - math.exp(-3) * (1 + 3 + 4.5))],
)
def test_poisson_sf(count: int, lam: float, expected: float) -> None:
    assert poisson_sf(count, lam) == pytest.approx(expected)


def test_poisson_sf_tiny_tail_is_positive_and_monotone() -> None:
    assert 0 < poisson_sf(60, 5.0) < poisson_sf(40, 5.0) < 1e-15


def test_steady_traffic_never_fires_and_a_burst_fires_once() -> None:
    counts = [20] * 30 + [100, 100, 100] + [20] * 10
    assert run(counts) == [30]


def test_needs_warm_baseline_and_min_count() -> None:
    assert run([1] * 5 + [50]) == []  # only 5 windows seen (warm-up is 12)
    assert run([0] * 30 + [9]) == []  # improbable but below min_count


def test_empty_windows_between_observations_count_as_zeros() -> None:
    baseline = Baseline()
    for i in range(20):
        observe(baseline, i * W, W, 16, RULE)
    before = baseline.mean_sqrt
    observe(baseline, 40 * W, W, 16, RULE)  # 19 silent windows in between
    assert baseline.n == 41
    assert baseline.mean_sqrt < before


def test_spike_windows_do_not_inflate_the_baseline() -> None:
    baseline = Baseline()
    for i in range(30):
        observe(baseline, i * W, W, 20, RULE)
    mean = baseline.mean_count
    verdict = observe(baseline, 30 * W, W, 400, RULE)
    assert verdict.fired and verdict.severity is Severity.HIGH
    assert baseline.mean_count == mean


def test_cooldown_lets_a_new_burst_fire_after_quiet_windows() -> None:
    counts = [20] * 30 + [120] + [20] * 5 + [120] + [20] * 3
    assert run(counts) == [30, 36]
    assert run(counts, SpikeRule(cooldown_windows=6)) == [30]


def test_a_lasting_level_shift_is_accepted_after_regime_windows() -> None:
    counts = [10] * 30 + [80] * 60
    fired = run(counts)
    assert fired == [30]  # one alert, then the baseline learns the new level


def test_synthetic_poisson_false_alarms_and_bursts() -> None:
    """50 symbols × 500 windows of steady Poisson traffic; 5× bursts fire once each."""
    rng = random.Random(20260122)
    false_alarms = 0
    burst_hits: list[int] = []
    for symbol in range(50):
        lam = rng.uniform(5.0, 60.0)
        counts = [poisson(rng, lam) for _ in range(500)]
        bursts = []
        if symbol % 2 == 0:  # half the symbols get two 3-window bursts at 5× their rate
            for start in (rng.randrange(100, 250), rng.randrange(300, 480)):
                bursts.append(range(start, start + 3))
                for i in range(start, start + 3):
                    counts[i] = poisson(rng, 5 * lam)
        fired = run(counts)
        in_burst = [[f for f in fired if f in b] for b in bursts]
        burst_hits.extend(len(h) for h in in_burst)
        false_alarms += len([f for f in fired if not any(f in b for b in bursts)])
    assert false_alarms <= 3
    assert burst_hits == [1] * 50

"""The two detectors behind ``detectors.observe`` on synthetic traffic with a daily rhythm."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

import pytest

from pulse.processors import detectors, surges
from pulse.processors.detectors import Detection, DetectorRule, DetectorState, Kind, Scored

FIVE_MIN, HOUR, DAY = 300_000, 3_600_000, 86_400_000
T0 = 1_640_995_200_000  # 2022-01-01T00:00Z, a Saturday
RULE = DetectorRule()  # the shipped defaults


def poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0  # Knuth; the 5-min rates here are small
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def rhythm(hour: int, weekend: bool) -> float:
    """Share of a day's volume in one UTC hour: quiet nights, a US-market-hours hump."""
    shares = [0.2 + 3.0 * math.exp(-(((h - 16) / 3.5) ** 2)) for h in range(24)]
    return shares[hour] / sum(shares) * (0.4 if weekend else 1.0)


@dataclass
class Symbol:
    daily: float  # messages per weekday
    size: float | None  # negative-binomial size per hour (None: Poisson)
    boosts: dict[int, float] = field(default_factory=dict)  # 5-min window start → ×rate


def traffic(rng: random.Random, sym: Symbol, days: int) -> list[tuple[int, int]]:
    """(5-min window start, count) of every non-empty window.

    NB symbols draw a gamma factor per hour (so hourly counts are negative-binomial) and
    glide from one hour's factor to the next: real chatter rises and ebbs, it does not jump
    at the top of the hour (a jump would be a genuine burst for the fast detector).
    """
    out = []
    factors = [
        1.0 if sym.size is None else rng.gammavariate(sym.size, 1 / sym.size)
        for _ in range(days * 24 + 1)
    ]
    for hour_index in range(days * 24):
        hour_start = T0 + hour_index * HOUR
        weekend = (hour_start // DAY + 3) % 7 >= 5
        lam = sym.daily * rhythm(hour_index % 24, weekend)
        f0, f1 = factors[hour_index], factors[hour_index + 1]
        for k in range(12):
            start = hour_start + k * FIVE_MIN
            f = f0 + (f1 - f0) * k / 12
            # news adds (boost − 1)× the usual volume on top of whatever the hour brings
            count = poisson(rng, lam / 12 * (f + sym.boosts.get(start, 1.0) - 1))
            if count:
                out.append((start, count))
    return out


def replay(counts: list[tuple[int, int]], rule: DetectorRule = RULE) -> list[tuple[int, Detection]]:
    """Feed 5-min and 1-h windows in close order, as the engine does; (start, alert)."""
    hourly: dict[int, int] = {}
    for start, count in counts:
        hourly[start - start % HOUR] = hourly.get(start - start % HOUR, 0) + count
    windows = [(s, FIVE_MIN, c) for s, c in counts] + [(s, HOUR, c) for s, c in hourly.items()]
    windows.sort(key=lambda w: (w[0] + w[1], w[1]))
    state = DetectorState()
    alerts = []
    for start, size, count in windows:
        verdict = detectors.observe(state, start, size, count, count, rule)
        if verdict is not None:
            alerts.append((start, verdict))
    return alerts


def boost(start: int, windows: int, factor: float) -> dict[int, float]:
    return {start + i * FIVE_MIN: factor for i in range(windows)}


def test_synthetic_month_pairs_few_false_alerts_and_every_injected_event_fires_once() -> None:
    """50 symbols × 60 days, Poisson and NB hourly traffic with a daily rhythm; a third of
    them get a 5× one-hour surge, a 3× six-hour surge or a 10× five-minute burst."""
    rng = random.Random(20260513)
    false_alerts: list[tuple[int, int, Kind]] = []
    hits: dict[str, list[int]] = {"surge5x1h": [], "surge3x6h": [], "burst10x5m": []}
    for i in range(50):
        sym = Symbol(daily=rng.uniform(300, 3000), size=None if i % 2 else rng.uniform(5, 12))
        day_start = T0 + rng.randrange(25, 55) * DAY
        while (day_start // DAY + 3) % 7 >= 5:  # a weekday
            day_start += DAY
        event = ["surge5x1h", "surge3x6h", "burst10x5m", None][i % 4]
        if event == "surge5x1h":
            start, span, kind = day_start + 15 * HOUR, HOUR, Kind.SURGE
            sym.boosts = boost(start, 12, 5.0)
        elif event == "surge3x6h":
            start, span, kind = day_start + 12 * HOUR, 6 * HOUR, Kind.SURGE
            sym.boosts = boost(start, 72, 3.0)
        elif event == "burst10x5m":
            start, span, kind = day_start + 16 * HOUR + 5 * FIVE_MIN, FIVE_MIN, Kind.BURST
            sym.boosts = boost(start, 1, 10.0)
        alerts = replay(traffic(rng, sym, 60))
        for a_start, v in alerts:
            in_event = event is not None and start - HOUR <= a_start < start + span + 6 * HOUR
            if not in_event:
                false_alerts.append((i, a_start, v.kind))
        if event is not None:
            hits[event].append(
                sum(
                    1
                    for a_start, v in alerts
                    if v.kind is kind
                    and start <= a_start + v.span_ms - 1
                    and a_start < start + span + 6 * HOUR
                )
            )
    assert len(false_alerts) <= 4, false_alerts
    assert hits == {k: [1] * len(v) for k, v in hits.items()}, hits


def steady(rng: random.Random, days: int, daily: float = 600) -> list[tuple[int, int]]:
    return traffic(rng, Symbol(daily=daily, size=None), days)


def test_one_user_posting_80_messages_in_an_hour_is_not_a_crowd() -> None:
    flood = T0 + 16 * DAY + 16 * HOUR  # a Monday afternoon
    windows: dict[int, list[int]] = {s: [c, c] for s, c in steady(random.Random(3), 20, 200)}
    for k in range(12):  # one account: 80 messages in the hour, one user in every window
        w = windows.setdefault(flood + k * FIVE_MIN, [0, 0])
        w[0] += 7 if k < 8 else 6
        w[1] += 1
    hours: dict[int, list[int]] = {}
    for s, (c, u) in windows.items():
        h = hours.setdefault(s - s % HOUR, [0, 0])
        h[0] += c
        h[1] += u - (1 if flood <= s < flood + HOUR else 0)
    hours[flood][1] += 1  # the account is one user of the hour, not twelve
    closing = sorted(
        [(s, FIVE_MIN, c, u) for s, (c, u) in windows.items()]
        + [(s, HOUR, c, u) for s, (c, u) in hours.items()],
        key=lambda w: (w[0] + w[1], w[1]),
    )

    def kinds(rule: DetectorRule) -> set[Kind]:
        state, out = DetectorState(), set()
        for s, size, c, u in closing:
            v = detectors.observe(state, s, size, c, u, rule)
            if v is not None and flood <= s < flood + HOUR:
                out.add(v.kind)
        return out

    assert kinds(RULE) == set()  # users scored: one more user is no surge
    assert Kind.SURGE in kinds(DetectorRule(scored=Scored.MESSAGES))  # messages: it does


def surge_alerts(hourly: list[tuple[int, int]], rule: surges.SurgeRule = RULE.surge) -> list[int]:
    state = surges.SurgeState()
    fired = []
    for start, count in hourly:
        v = surges.observe(state, start, HOUR, count, rule)
        if v is not None and v.fired:
            fired.append(start)
    return fired


def hourly_profile(days: int, extra: dict[int, int]) -> list[tuple[int, int]]:
    """Deterministic mean traffic (600/day with the rhythm) plus ``extra`` per hour start."""
    out = []
    for i in range(days * 24):
        start = T0 + i * HOUR
        weekend = (start // DAY + 3) % 7 >= 5
        out.append((start, round(600 * rhythm(i % 24, weekend)) + extra.get(start, 0)))
    return out


def test_evening_chatter_does_not_mute_the_earnings_morning() -> None:
    eve = T0 + 16 * DAY  # a Monday
    extra = {eve + h * HOUR: 120 for h in range(19, 24)}  # 19:00–24:00: chatter
    extra |= {eve + DAY + h * HOUR: 300 for h in (11, 12)}  # the next morning: the news
    fired = surge_alerts(hourly_profile(20, extra))
    assert [(t - eve) // HOUR for t in fired] == [19, 24 + 11]


def test_a_much_stronger_hour_inside_an_episode_escalates() -> None:
    day = T0 + 16 * DAY
    extra = {day + h * HOUR: 60 for h in range(8, 20)}  # a long busy day...
    extra[day + 14 * HOUR] = 1500  # ...and the news
    fired = surge_alerts(hourly_profile(20, extra))
    assert [(t - day) // HOUR for t in fired][-1] == 14
    assert len(fired) == 2


def test_cold_symbols_stay_quiet_until_warm() -> None:
    extra = {T0 + 2 * DAY + 15 * HOUR: 500}
    assert surge_alerts(hourly_profile(4, extra)) == []
    state = DetectorState()
    assert not detectors.is_warm(state, RULE)


def test_state_survives_a_json_round_trip_mid_stream() -> None:
    rng = random.Random(11)
    counts = traffic(rng, Symbol(1200, 8.0, boost(T0 + 16 * DAY + 15 * HOUR, 12, 8.0)), 20)
    whole = replay(counts)
    half = len(counts) // 2
    state = DetectorState()
    alerts = []
    hourly: dict[int, int] = {}
    for s, c in counts:
        hourly[s - s % HOUR] = hourly.get(s - s % HOUR, 0) + c
    windows = sorted(
        [(s, FIVE_MIN, c) for s, c in counts] + [(s, HOUR, c) for s, c in hourly.items()],
        key=lambda w: (w[0] + w[1], w[1]),
    )
    for n, (s, size, c) in enumerate(windows):
        if n == half:
            state = DetectorState.from_json(json.loads(json.dumps(state.to_json())))
        v = detectors.observe(state, s, size, c, c, RULE)
        if v is not None:
            alerts.append((s, v))
    assert alerts == whole and whole


def test_a_repeated_window_changes_nothing() -> None:
    state = DetectorState()
    for i in range(30):
        detectors.observe(state, T0 + i * FIVE_MIN, FIVE_MIN, 20, 20, RULE)
    before = state.to_json()
    assert detectors.observe(state, T0 + 29 * FIVE_MIN, FIVE_MIN, 500, 500, RULE) is None
    assert state.to_json() == before


def test_windows_no_detector_scores_return_none() -> None:
    assert detectors.observe(DetectorState(), T0, 60_000, 500, 500, RULE) is None


def test_verdict_fields_fill_a_spike_record() -> None:
    v = Detection(
        Kind.SURGE,
        40.0,
        4.0,
        1e-9,
        6.0,
        10.0,
        detectors.Severity.MEDIUM,
        Scored.USERS,
        3 * HOUR,
        55,
        40,
    )
    assert v.record_fields() == {
        "kind": "SURGE",
        "count": 55,
        "distinct_users": 40,
        "scored": "USERS",
        "scored_count": 40.0,
        "expected_count": 4.0,
        "span_ms": 3 * HOUR,
        "score": 6.0,
        "p_value": 1e-9,
        "ratio": 10.0,
        "severity": "MEDIUM",
    }


def _direct_nb_sf(k: int, mean: float, disp: float) -> float:
    r = 1 / disp
    q = mean / (mean + r)
    return 1 - sum(
        math.exp(
            math.lgamma(j + r)
            - math.lgamma(r)
            - math.lgamma(j + 1)
            + r * math.log1p(-q)
            + j * math.log(q)
        )
        for j in range(k)
    )


@pytest.mark.parametrize(
    "k, mean, disp",
    [
        (1, 3.0, 0.5),
        (10, 3.0, 0.5),
        (50, 10.0, 0.5),
        (30, 10.0, 0.1),
        (5, 5.0, 0.001),
        (3, 0.2, 0.3),
        (40, 12.0, 2.0),
    ],
)
def test_nb_tail_matches_the_summed_pmf(k: int, mean: float, disp: float) -> None:
    assert math.exp(surges.nb_log_sf(k, mean, disp)) == pytest.approx(
        _direct_nb_sf(k, mean, disp), rel=1e-9
    )


def test_nb_tail_far_out_and_its_score() -> None:
    log_p = surges.nb_log_sf(100, 20.0, 0.01)
    assert -70 < log_p < -55  # ≈ 1e-27: summing the pmf would lose it to rounding
    assert surges.z_of_log_p(math.log(1e-6)) == pytest.approx(4.753424, abs=1e-5)
    assert surges.z_of_log_p(-3000.0) == pytest.approx(
        math.sqrt(6000 - math.log(6000 * 2 * math.pi)), rel=1e-3
    )


def test_hand_written_to_json_is_asdict_and_follows_observe() -> None:
    from dataclasses import asdict

    state = DetectorState()
    for i in range(2 * 24 * 12 + 7):  # two days of 5-min windows and their hours
        start = T0 + i * FIVE_MIN
        detectors.observe(state, start, FIVE_MIN, 3 + i % 5, 3, RULE)
        if i % 12 == 11:
            detectors.observe(state, start - 11 * FIVE_MIN, HOUR, 40, 30, RULE)
    row = state.to_json()
    assert row["surge"] == asdict(state.surge) and state.surge.recent
    assert row["bursts"] == {str(k): asdict(b) for k, b in state.bursts.items()}
    assert state.to_json() == row  # nothing observed since
    detectors.observe(state, T0 + 10 * DAY, FIVE_MIN, 9, 9, RULE)
    assert state.to_json() != row
    rebuilt = DetectorState.from_json(json.loads(json.dumps(state.to_json())))
    assert rebuilt == state and rebuilt.to_json() == state.to_json()

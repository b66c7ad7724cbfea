"""Pure hour-scale surge detection: this symbol's level × its hour-of-day profile, NB tails.

A *surge* is volume that stays well above what this symbol usually has at these hours for
one to several hours (a sector sell-off, a peer's guidance), when no single 5-minute window
is extreme enough for the burst detector (:mod:`processors.spikes`).

Model, per symbol (one :class:`SurgeState`, JSON-able, kept in a changelogged table row):

* The expectation of slot ``h`` (hour of the UTC day) on a day of type ``t`` (weekday or
  weekend) is ``level[t] × shape[t][h]``: ``level`` is an EWMA over days of the day's total,
  ``shape`` an EWMA of each slot's count normalised to fractions (smoothed towards uniform so
  an empty night never predicts exactly zero). Both learn **only when a day is complete**,
  so a day's own rise is never part of its expectation. A day type with no history yet
  borrows the other type's model.
* Each slot is tested together with the slots before it over a few *spans* (default 1, 3
  and 6 hours): the span's scored volume ``X`` against its expectation ``M`` with a
  negative-binomial tail ``P(X' ≥ X)``, ``Var X' = M + φ_k·M²``. The over-dispersion
  ``φ_k`` is learned per symbol and per span (a weighted moment estimator, EWMA over slots)
  so day-to-day swings of the whole level, which make hours of one day move together, widen
  the longer spans as much as the data says. The smallest p over spans, times the number of
  spans (Bonferroni), is the verdict's p-value.
* A slot is *elevated* when the baseline has seen ``warmup_days`` days, ``X ≥ min_count``,
  ``X / M ≥ min_ratio`` and ``p ≤ rule.p``. An alert fires on an elevated slot unless the
  symbol is inside an *episode* (an elevated slot within the last ``cooldown_slots``) whose
  peak ratio it does not beat by ``escalation``×: one surge fires once, but chatter the
  evening before does not mute an earnings morning (the night between is calm, and even
  without calm a much stronger morning escalates).
* Learning is robust: a slot counts at most ``learn_clip``× its expectation towards level
  and shape, so one surge day barely moves tomorrow's expectation, while a lasting change of
  level is learned within days (× up to 1 + alpha·(clip − 1) per day).

Slots with no message are never emitted by the engine; the gap between two observed slots
is filled with zeros here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

DAY_MS = 86_400_000
WEEKDAY, WEEKEND = 0, 1
# a gap longer than this many days is folded as empty days without walking its slots
MAX_GAP_DAYS = 60
_NORMAL = NormalDist()


@dataclass(frozen=True)
class SurgeRule:
    """Surge thresholds and learning rates (from Settings; defaults in docs/signals.md)."""

    p: float = 1e-5  # Bonferroni-adjusted p-value an elevated slot needs
    min_count: int = 12  # scored volume over the span
    min_ratio: float = 2.0  # X / M over the span
    spans: tuple[int, ...] = (1, 3, 6)  # slots summed (ending at the closed slot)
    warmup_days: int = 5
    cooldown_slots: int = 3
    escalation: float = 3.0
    alpha_level: float = 0.15  # per day of the same type (memory ≈ 1 week of weekdays)
    alpha_shape: float = 0.05  # per day of the same type
    alpha_disp: float = 0.003  # per slot (memory ≈ 2 weeks of hours)
    trim_p: float = 1e-3  # spans rarer than this do not teach φ
    shape_smoothing: float = 0.1  # weight of the uniform profile mixed into the shape
    learn_clip: float = 3.0
    disp_prior: float = 0.3
    disp_min: float = 0.02
    disp_max: float = 4.0


@dataclass
class SurgeState:
    """One symbol's surge baseline (JSON-able table state)."""

    slots: int = 24  # slots per day (86,400,000 / window size)
    day_ms: int | None = None  # start of the day being accumulated
    today: list[float] = field(default_factory=list)
    days: list[int] = field(default_factory=lambda: [0, 0])  # complete days per type
    level: list[float] = field(default_factory=lambda: [0.0, 0.0])
    shape: list[list[float]] = field(default_factory=list)  # per type, per slot (EWMA)
    disp_num: list[float] = field(default_factory=list)  # per span
    disp_den: list[float] = field(default_factory=list)
    recent: list[list[float]] = field(default_factory=list)  # [x, mu] of the last slots
    last_start_ms: int | None = None
    last_elevated_ms: int | None = None
    episode_peak: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON-able dict of copies (``asdict`` without its deep copies: this
        runs for every changed symbol row)."""
        return {
            "slots": self.slots,
            "day_ms": self.day_ms,
            "today": list(self.today),
            "days": list(self.days),
            "level": list(self.level),
            "shape": [list(s) for s in self.shape],
            "disp_num": list(self.disp_num),
            "disp_den": list(self.disp_den),
            "recent": [list(r) for r in self.recent],
            "last_start_ms": self.last_start_ms,
            "last_elevated_ms": self.last_elevated_ms,
            "episode_peak": self.episode_peak,
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> SurgeState:
        # copies: the state is updated in place, the row may be the table's own
        return cls(**{k: _copy(v) for k, v in row.items()})

    @property
    def days_seen(self) -> int:
        return self.days[WEEKDAY] + self.days[WEEKEND]


def _copy(value: Any) -> Any:
    """A copy of a JSON value of :class:`SurgeState` (lists, lists of lists, scalars)."""
    if isinstance(value, list):
        return [list(v) if isinstance(v, list) else v for v in value]
    return value


@dataclass(frozen=True)
class SurgeVerdict:
    """An elevated slot; ``fired`` says whether it is a new alert."""

    count: float  # scored volume over the span
    expected_count: float
    p_value: float
    score: float  # normal-equivalent z of p_value
    ratio: float
    span_slots: int
    fired: bool  # False: elevated inside an episode that already alerted


# --- negative-binomial tail --------------------------------------------------------------


def _log_betacf(a: float, b: float, x: float) -> float:
    """log of the continued fraction of the incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-14
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < eps:
            break
    return math.log(h)


def log_betainc(a: float, b: float, x: float) -> float:
    """log of the regularised incomplete beta I_x(a, b), accurate far into the tail."""
    if x <= 0.0:
        return -math.inf
    if x >= 1.0:
        return 0.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return log_front + _log_betacf(a, b, x) - math.log(a)
    rest = math.exp(log_front + _log_betacf(b, a, 1.0 - x) - math.log(b))
    return math.log1p(-min(rest, 1.0 - 1e-16))


def nb_log_sf(count: float, mean: float, disp: float) -> float:
    """log P(X ≥ count) for X negative-binomial with this mean and Var = mean + disp·mean².

    P(X ≥ k) = I_q(k, r) with size r = 1/disp and q = mean / (mean + r).
    """
    if count <= 0:
        return 0.0
    if mean <= 0:
        return -math.inf
    r = 1.0 / disp
    return log_betainc(float(math.ceil(count)), r, mean / (mean + r))


def z_of_log_p(log_p: float) -> float:
    """Normal-equivalent score of an upper-tail p-value given as its log."""
    if log_p >= 0.0:
        return -math.inf if log_p > 0.0 else 0.0
    if log_p > -690.0:
        p = math.exp(log_p)
        return -_NORMAL.inv_cdf(min(max(p, 1e-300), 1.0 - 1e-16))
    # Mills-ratio asymptote: log p ≈ −z²/2 − log(z·√(2π))
    z = math.sqrt(-2.0 * log_p)
    for _ in range(4):
        z = math.sqrt(max(-2.0 * log_p - 2.0 * math.log(z * math.sqrt(2 * math.pi)), 1.0))
    return z


# --- the model ---------------------------------------------------------------------------


def day_type(day_ms: int) -> int:
    """WEEKEND for Saturday and Sunday (UTC), else WEEKDAY; epoch day 0 was a Thursday."""
    return WEEKEND if (day_ms // DAY_MS + 3) % 7 >= 5 else WEEKDAY


def _init(state: SurgeState, size_ms: int, rule: SurgeRule) -> None:
    if DAY_MS % size_ms:
        raise ValueError(f"surge window must divide a day: {size_ms} ms")
    state.slots = DAY_MS // size_ms
    state.today = [0.0] * state.slots
    state.shape = [[0.0] * state.slots, [0.0] * state.slots]
    state.disp_num = [0.0] * len(rule.spans)
    state.disp_den = [0.0] * len(rule.spans)


def expected(state: SurgeState, day_ms: int, slot: int, rule: SurgeRule) -> float | None:
    """Expected scored volume of one slot from earlier days only; None while cold."""
    t = day_type(day_ms)
    if state.days[t] == 0:
        t = 1 - t  # borrow the other day type's model until this one has a day
    if state.days[t] == 0:
        return None
    total = sum(state.shape[t])
    frac = state.shape[t][slot] / total if total > 0 else 1.0 / state.slots
    eps = rule.shape_smoothing
    return state.level[t] * ((1 - eps) * frac + eps / state.slots)


def dispersion(state: SurgeState, span_index: int, rule: SurgeRule) -> float:
    den = state.disp_den[span_index]
    phi = state.disp_num[span_index] / den if den > 0 else rule.disp_prior
    return min(max(phi, rule.disp_min), rule.disp_max)


def _fold_day(state: SurgeState, rule: SurgeRule) -> None:
    """Learn level and shape from the completed day in ``today``, then clear it."""
    assert state.day_ms is not None
    t = day_type(state.day_ms)
    xs = list(state.today)
    if state.days[t] or state.days[1 - t]:
        clip = rule.learn_clip
        mus = [expected(state, state.day_ms, h, rule) or 0.0 for h in range(state.slots)]
        xs = [min(x, clip * max(mu, 1.0 / state.slots)) for x, mu in zip(xs, mus, strict=True)]
    total = sum(xs)
    if state.days[t] == 0:
        state.level[t] = total
        state.shape[t] = list(xs)
    else:
        state.level[t] += rule.alpha_level * (total - state.level[t])
        a = rule.alpha_shape
        state.shape[t] = [s + a * (x - s) for s, x in zip(state.shape[t], xs, strict=True)]
    state.days[t] += 1
    state.today = [0.0] * state.slots


def _learn_dispersion(state: SurgeState, rule: SurgeRule) -> None:
    """Moment estimate of φ per span from the newest slot: E[(X−M)² − M] = φ·M²."""
    a = rule.alpha_disp
    for i, span in enumerate(rule.spans):
        if len(state.recent) < span:
            continue
        window = state.recent[-span:]
        x = sum(r[0] for r in window)
        m = sum(r[1] for r in window)
        if m <= 0:
            continue
        phi = dispersion(state, i, rule)
        # trimmed: a span in the far tail (p < trim_p) is left out, so neither a surge nor a
        # run of busy days teaches the model that such volume is ordinary
        if x > m + 2.0 * math.sqrt(m + phi * m * m) and (
            nb_log_sf(x, m, phi) < math.log(rule.trim_p)
        ):
            continue
        num, den = (x - m) ** 2 - m, m * m
        if state.disp_den[i] == 0:
            state.disp_num[i], state.disp_den[i] = rule.disp_prior * den, den
        state.disp_num[i] += a * (num - state.disp_num[i])
        state.disp_den[i] += a * (den - state.disp_den[i])


def _enter_slot(
    state: SurgeState,
    start_ms: int,
    size_ms: int,
    x: float,
    rule: SurgeRule,
    learn: bool = True,
) -> None:
    """Account one slot (observed or an empty one of a gap): day roll-over, recent, φ."""
    day = start_ms - start_ms % DAY_MS
    if state.day_ms is not None and day != state.day_ms:
        _fold_day(state, rule)
        empty_days = min((day - state.day_ms) // DAY_MS - 1, MAX_GAP_DAYS)
        for k in range(empty_days):
            state.day_ms = day - (empty_days - k) * DAY_MS
            _fold_day(state, rule)
    state.day_ms = day
    slot = (start_ms - day) // size_ms
    state.today[slot] += x
    mu = expected(state, day, slot, rule)
    if mu is None:
        state.recent = []
        return
    state.recent = [*state.recent, [x, mu]][-max(rule.spans) :]
    if learn and state.days_seen >= rule.warmup_days and state.last_elevated_ms is None:
        # not inside an episode: a surge must not teach the model that surges are normal
        _learn_dispersion(state, rule)


def _fill_gap(state: SurgeState, start_ms: int, size_ms: int, rule: SurgeRule) -> None:
    if state.last_start_ms is None:
        return
    gap_start = state.last_start_ms + size_ms
    # beyond a long gap only the days matter: skip to the last couple of days of it
    gap_start = max(gap_start, start_ms - 2 * DAY_MS)
    for s in range(gap_start, start_ms, size_ms):
        _enter_slot(state, s, size_ms, 0.0, rule)


def _best_span(state: SurgeState, rule: SurgeRule) -> tuple[float, float, float, int]:
    """(log p, X, M, span) of the most improbable span ending at the newest slot."""
    best = (0.0, 0.0, 0.0, 0)
    for i, span in enumerate(rule.spans):
        if len(state.recent) < span:
            continue
        window = state.recent[-span:]
        x = sum(r[0] for r in window)
        m = sum(r[1] for r in window)
        if x < rule.min_count or m <= 0 or x < rule.min_ratio * m:
            continue
        log_p = nb_log_sf(x, m, dispersion(state, i, rule))
        if best[3] == 0 or log_p < best[0]:
            best = (log_p, x, m, span)
    return best


def observe(
    state: SurgeState, start_ms: int, size_ms: int, value: float, rule: SurgeRule
) -> SurgeVerdict | None:
    """Score one closed slot of a symbol (its scored volume ``value``), then learn from it.

    Returns None when the slot is not elevated, and for a slot at or before the last one
    seen (a repeat after a replay), which changes nothing.
    """
    if not state.today:
        _init(state, size_ms, rule)
    if state.last_start_ms is not None and start_ms <= state.last_start_ms:
        return None
    _fill_gap(state, start_ms, size_ms, rule)
    # expectation and φ of this slot come from before it: test first, learn after
    _enter_slot(state, start_ms, size_ms, value, rule, learn=False)
    state.last_start_ms = start_ms
    warm = state.days_seen >= rule.warmup_days
    log_p, x, m, span = _best_span(state, rule) if warm else (0.0, 0.0, 0.0, 0)
    _close_episode_if_calm(state, start_ms, size_ms, rule)
    log_p = min(0.0, log_p + math.log(len(rule.spans)))
    if not span or log_p > math.log(rule.p):
        if warm and state.last_elevated_ms is None:
            _learn_dispersion(state, rule)
        return None
    ratio = x / m
    fired = state.last_elevated_ms is None or ratio >= rule.escalation * state.episode_peak
    state.last_elevated_ms = start_ms
    state.episode_peak = max(state.episode_peak, ratio)
    return SurgeVerdict(
        count=x,
        expected_count=m,
        p_value=math.exp(log_p),
        score=z_of_log_p(log_p),
        ratio=ratio,
        span_slots=span,
        fired=fired,
    )


def _close_episode_if_calm(state: SurgeState, start_ms: int, size_ms: int, rule: SurgeRule) -> None:
    """An episode ends after more than ``cooldown_slots`` slots without an elevated one."""
    if state.last_elevated_ms is not None and (
        (start_ms - state.last_elevated_ms) // size_ms > rule.cooldown_slots
    ):
        state.last_elevated_ms = None
        state.episode_peak = 0.0

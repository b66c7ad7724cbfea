"""The spike detectors behind one small API: what the engine calls when a window closes.

Two detectors, one output topic (``pulse.spikes``, field ``kind``):

* ``BURST`` (:mod:`processors.spikes`): minute-scale bursts on short tumbling windows
  (``spike_windows``, default 5 min) against an EWMA baseline of the symbol's recent windows.
* ``SURGE`` (:mod:`processors.surges`): hour-scale surges on the ``surge_window`` tumbling
  windows (default 1 h) against the symbol's level × hour-of-day/weekday profile learned
  from earlier days, with a negative-binomial test over 1–6 h spans.

Each detector keeps its own cooldown, so a burst alert never mutes a surge and vice versa.
The volume that is scored is the window's distinct users by default (``spike_scored``), so
one account's flood does not look like a crowd; message counts are still reported.

How the engine uses it (the whole API)::

    rule = detectors.rule_from_settings(settings)            # once
    state = detectors.DetectorState()                        # per symbol, in its table row
    row["detectors"] = state.to_json()                       # JSON-able
    state = detectors.DetectorState.from_json(row["detectors"])

    # for every *tumbling* window of the symbol, in order of window start, when it closes
    # (revision 0 only; windows with no message need no call, gaps count as zeros):
    verdict = detectors.observe(state, start_ms, size_ms, message_count, distinct_users, rule)
    if verdict is not None:                                  # an alert: publish it
        record = {**window_fields, **verdict.record_fields(), "bullish_ratio": ...}

``observe`` returns None for a window no detector scores, for a quiet window, and for a
window inside an episode that already alerted. It is idempotent for repeats: a window at
or before the last one a detector saw changes nothing and returns None.

Warm start: the state is built only from closed windows, so replaying a symbol's recent
history through the pipeline (or through ``observe`` in ``bench/evaluate.py``) leaves the
same state the live stream would have built; a deployment that first replays a week of
history alerts from the first live hour. Until then a symbol is *cold*
(:func:`is_warm` False): it never alerts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pulse.durations import parse_duration_ms, parse_durations_ms
from pulse.processors import spikes, surges
from pulse.processors.spikes import Severity


class Kind(StrEnum):
    BURST = "BURST"
    SURGE = "SURGE"


class Scored(StrEnum):
    MESSAGES = "MESSAGES"
    USERS = "USERS"


@dataclass(frozen=True)
class DetectorRule:
    """Which windows each detector scores, what volume, and their thresholds."""

    scored: Scored = Scored.USERS
    burst_sizes_ms: tuple[int, ...] = (300_000,)
    burst: spikes.SpikeRule = field(default_factory=spikes.SpikeRule)
    surge_size_ms: int | None = 3_600_000  # None: no surge detector
    surge: surges.SurgeRule = field(default_factory=surges.SurgeRule)


@dataclass
class DetectorState:
    """One symbol's detector state (JSON-able; one changelogged table row or part of one)."""

    bursts: dict[int, spikes.Baseline] = field(default_factory=dict)  # by window size
    surge: surges.SurgeState = field(default_factory=surges.SurgeState)

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON-able dict, built when a meta row is written (on closes and
        corrections only); not kept, as one per symbol would hold ~2 KB each for nothing."""
        return {
            "bursts": {str(k): b.to_json() for k, b in self.bursts.items()},
            "surge": self.surge.to_json(),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> DetectorState:
        return cls(
            bursts={int(k): spikes.Baseline.from_json(b) for k, b in row["bursts"].items()},
            surge=surges.SurgeState.from_json(row["surge"]),
        )


@dataclass(frozen=True)
class Detection:
    """An alert: which detector, the scored volume against its expectation, how improbable.

    ``count``/``expected_count``/``ratio``/``p_value`` refer to the scored volume (users or
    messages, see ``scored``) over ``span_ms`` ending at the window's end (a surge may sum
    the hours before the closed one); ``message_count`` and ``users`` are the closed window's.
    """

    kind: Kind
    count: float
    expected_count: float
    p_value: float
    score: float
    ratio: float
    severity: Severity
    scored: Scored
    span_ms: int
    message_count: int
    users: int

    def record_fields(self) -> dict[str, Any]:
        """The fields of a ``Spike`` (spike.avsc) this verdict decides."""
        return {
            "kind": self.kind.value,
            "count": self.message_count,
            "distinct_users": self.users,
            "scored": self.scored.value,
            "scored_count": self.count,
            "expected_count": self.expected_count,
            "span_ms": self.span_ms,
            "score": self.score,
            "p_value": self.p_value,
            "ratio": self.ratio,
            "severity": self.severity.value,
        }


def severity(score: float, threshold: float) -> Severity:
    """LOW at the detector's threshold, MEDIUM from 1.5×, HIGH from 2× (in score units)."""
    if score >= 2 * threshold:
        return Severity.HIGH
    if score >= 1.5 * threshold:
        return Severity.MEDIUM
    return Severity.LOW


def observe(
    state: DetectorState,
    start_ms: int,
    size_ms: int,
    count: int,
    users: int,
    rule: DetectorRule,
) -> Detection | None:
    """Score one closed tumbling window of a symbol with the detector for its size.

    :param count: messages in the window.
    :param users: distinct users in the window.
    :returns: a :class:`Detection` when an alert fires, else None.
    """
    value = users if rule.scored is Scored.USERS else count
    if size_ms in rule.burst_sizes_ms:
        return _burst(state, start_ms, size_ms, value, count, users, rule)
    if size_ms == rule.surge_size_ms:
        return _surge(state, start_ms, size_ms, value, count, users, rule)
    return None


def is_warm(state: DetectorState, rule: DetectorRule) -> bool:
    """Whether every detector of the symbol has learned enough to alert (the board's "cold")."""
    bursts = all(
        size in state.bursts and state.bursts[size].n >= rule.burst.warmup_windows
        for size in rule.burst_sizes_ms
    )
    surge = rule.surge_size_ms is None or state.surge.days_seen >= rule.surge.warmup_days
    return bursts and surge


def _burst(
    state: DetectorState,
    start_ms: int,
    size_ms: int,
    value: int,
    count: int,
    users: int,
    rule: DetectorRule,
) -> Detection | None:
    baseline = state.bursts.setdefault(size_ms, spikes.Baseline())
    if baseline.last_start_ms is not None and start_ms <= baseline.last_start_ms:
        return None  # a repeat: the baseline has already seen it
    v = spikes.observe(
        baseline, start_ms, size_ms, value, rule.burst, _profile(state, start_ms, size_ms, rule)
    )
    if not v.fired:
        return None
    return Detection(
        kind=Kind.BURST,
        count=v.count,
        expected_count=v.expected_count,
        p_value=v.p_value,
        score=v.score,
        ratio=v.ratio,
        severity=v.severity,
        scored=rule.scored,
        span_ms=size_ms,
        message_count=count,
        users=users,
    )


def _profile(state: DetectorState, start_ms: int, size_ms: int, rule: DetectorRule) -> float | None:
    """This time of day's usual volume for a window of ``size_ms`` (surge profile), if warm."""
    surge, size = state.surge, rule.surge_size_ms
    if size is None or not surge.today or surge.days_seen < rule.surge.warmup_days:
        return None
    day = start_ms - start_ms % surges.DAY_MS
    mu = surges.expected(surge, day, (start_ms - day) // size, rule.surge)
    return None if mu is None else mu * size_ms / size


def _surge(
    state: DetectorState,
    start_ms: int,
    size_ms: int,
    value: int,
    count: int,
    users: int,
    rule: DetectorRule,
) -> Detection | None:
    v = surges.observe(state.surge, start_ms, size_ms, value, rule.surge)
    if v is None or not v.fired:
        return None
    threshold = surges.z_of_log_p(math.log(rule.surge.p))
    return Detection(
        kind=Kind.SURGE,
        count=v.count,
        expected_count=v.expected_count,
        p_value=v.p_value,
        score=v.score,
        ratio=v.ratio,
        severity=severity(v.score, threshold),
        scored=rule.scored,
        span_ms=v.span_slots * size_ms,
        message_count=count,
        users=users,
    )


def rule_from_settings(settings: Any) -> DetectorRule:
    """The rule from a :class:`settings.Settings` (``spike_*`` and ``surge_*`` fields).

    :raises ValueError: a surge window not dividing a day, a span not a multiple of it.
    """
    bursts = tuple(parse_durations_ms(settings.spike_windows))
    surge_size = parse_duration_ms(settings.surge_window) if settings.surge_window else None
    span_ms = parse_durations_ms(settings.surge_spans)
    if surge_size is not None and (
        surges.DAY_MS % surge_size or any(ms <= 0 or ms % surge_size for ms in span_ms)
    ):
        raise ValueError(
            f"surge window {settings.surge_window!r} must divide a day and every surge span "
            f"{settings.surge_spans!r} must be a multiple of it"
        )
    spans = tuple(ms // (surge_size or 1) for ms in span_ms)
    return DetectorRule(
        scored=Scored(settings.spike_scored.upper()),
        burst_sizes_ms=bursts,
        burst=spikes.SpikeRule(
            min_count=settings.spike_min_count,
            z=settings.spike_z,
            cooldown_windows=settings.spike_cooldown_windows,
            warmup_windows=settings.spike_warmup_windows,
            alpha=settings.spike_alpha,
        ),
        surge_size_ms=surge_size,
        surge=surges.SurgeRule(
            p=settings.surge_p,
            min_count=settings.surge_min_count,
            min_ratio=settings.surge_min_ratio,
            spans=spans,
            warmup_days=settings.surge_warmup_days,
        ),
    )

"""Stage 2, pure: per-symbol event-time buckets, watermark-driven closes, final results.

A symbol's state keeps *panes*: buckets of the greatest common step of all window sizes and
advances (1 min for ``1m,5m,1h`` + ``1h/5m``). Every window, tumbling or hopping, is the
merge of its panes when it closes, so a hopping window reports the whole hour, not the last
step. A pane remembers each counted message id, which makes retractions exact and repeats
(at-least-once redelivery) harmless.

Windows close when the partition's watermark (max event time − grace) reaches their end;
each is emitted once (revision 0). Panes and the list of emitted windows are kept for
``revision_horizon_ms`` after a window's end, so a destroy arriving later yields a corrected
result with ``revision + 1``.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field
from functools import cached_property, reduce
from typing import Any

from pulse.processors import detectors
from pulse.processors.detectors import DetectorRule, DetectorState
from pulse.processors.mentions import Mention, MentionKind
from pulse.processors.progress import NO_WATERMARK
from pulse.processors.sentiment import bullish_ratio, wilson_interval

from pulse.durations import parse_duration_ms
from pulse.settings import Settings

SAMPLE_IDS = 5


@dataclass(frozen=True, order=True)
class WindowSpec:
    size_ms: int
    advance_ms: int
    # the spec's name in state rows; built once, as it is looked up for every mention
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.advance_ms <= 0 or self.size_ms % self.advance_ms:
            raise ValueError(f"window size must be a positive multiple of advance: {self}")
        object.__setattr__(self, "key", f"{self.size_ms}/{self.advance_ms}")

    @property
    def hopping(self) -> bool:
        return self.advance_ms != self.size_ms


def parse_windows(tumbling: str, hopping: str) -> tuple[WindowSpec, ...]:
    """Window specs from settings: ``"1m,5m,1h"`` and ``"1h/5m"`` (comma-separated)."""
    specs = [
        WindowSpec(parse_duration_ms(t), parse_duration_ms(t)) for t in tumbling.split(",")
        if t.strip()
    ]
    for h in hopping.split(","):
        if h.strip():
            size, advance = h.split("/")
            specs.append(WindowSpec(parse_duration_ms(size), parse_duration_ms(advance)))
    return tuple(sorted(set(specs)))


def window_start_ms(event_ms: int, size_ms: int) -> int:
    """Start of the tumbling window holding ``event_ms``."""
    return event_ms - event_ms % size_ms


def window_starts(event_ms: int, spec: WindowSpec) -> list[int]:
    """Starts of every window of ``spec`` that holds ``event_ms``, oldest first."""
    last = window_start_ms(event_ms, spec.advance_ms)
    first = last - spec.size_ms + spec.advance_ms
    return list(range(first, last + 1, spec.advance_ms))


def pane_size_ms(specs: tuple[WindowSpec, ...]) -> int:
    return reduce(math.gcd, [n for s in specs for n in (s.size_ms, s.advance_ms)])


@dataclass(frozen=True)
class WindowConfig:
    specs: tuple[WindowSpec, ...]
    grace_ms: int
    revision_horizon_ms: int
    rule: DetectorRule | None = None  # the spike detectors; None: no spikes

    @cached_property
    def pane_ms(self) -> int:
        return pane_size_ms(self.specs)

    @cached_property
    def detector_specs(self) -> frozenset[WindowSpec]:
        """The tumbling windows a detector scores (every other window skips the call)."""
        rule = self.rule
        if rule is None:
            return frozenset()
        sizes = {*rule.burst_sizes_ms, rule.surge_size_ms}
        return frozenset(s for s in self.specs if not s.hopping and s.size_ms in sizes)

    @cached_property
    def retain_ms(self) -> int:
        """How long after its start a pane is still needed (last window end + horizon)."""
        return max(s.size_ms for s in self.specs) + self.revision_horizon_ms


_NO_IDS: frozenset[int] = frozenset()
_LABEL_CODES: dict[str | None, int] = {None: 0, "Bullish": 1, "Bearish": 2}
_LABELS = (None, "Bullish", "Bearish")


def pack_user_label(user_id: int | None, label: str | None) -> Any:
    """A message's user id and label as one int: ``user << 3 | has_user << 2 | label code``
    (Python ints shift exactly, negative ones too); a label outside Bullish/Bearish/None
    stays a tuple."""
    code = _LABEL_CODES.get(label)
    if code is None:
        return (user_id, label)
    return code if user_id is None else (user_id << 3) | 4 | code


def unpack_user_label(value: Any) -> tuple[int | None, str | None]:
    """The inverse of :func:`pack_user_label`."""
    if type(value) is tuple:
        return value
    return (value >> 3 if value & 4 else None), _LABELS[value & 3]


@dataclass
class Pane:
    """One pane of one symbol: the counted message ids (user, label), the /sentiment scores by
    message id, and the ids destroyed.

    Persisted as append-only *chunks*: each :meth:`take_chunk` returns only what was added
    since the last one, so a hot symbol's growing pane is never rewritten whole.

    Running tallies of the counted messages (labels, users, per-user votes, the smallest ids)
    are kept up to date on every add and retraction, so a window merges its panes' tallies
    instead of walking every message (a 1 h window hopping by 5 min would walk each one ~12
    times). They are derived state: never persisted, rebuilt with the messages.
    """

    # message id → its user and label, packed in one int (:func:`pack_user_label`; a tuple
    # only for a label the schema does not have): a dict of ints is invisible to Python's
    # cyclic GC, a dict of tuples is walked by every full collection (~40 % of the engine's
    # time with 250k counted messages); it also saves the tuple's memory
    messages: dict[int, Any] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    # a shared empty frozenset until the first destroy (a set per pane is one more object
    # for the GC to walk; few panes ever see a destroy)
    retracted: set[int] | frozenset[int] = _NO_IDS
    chunks: int = 0  # chunk rows written so far
    # ("m" | "s" | "r", id) added since the last chunk; None when there is none
    _new: list[tuple[str, int]] | None = field(default=None, repr=False, compare=False)
    # --- the tallies (see the class doc) ---
    bullish: int = field(default=0, init=False, repr=False, compare=False)
    bearish: int = field(default=0, init=False, repr=False, compare=False)
    # labelled messages without a user id: each is a voter of its own
    anon_bullish: int = field(default=0, init=False, repr=False, compare=False)
    anon_bearish: int = field(default=0, init=False, repr=False, compare=False)
    # user → counted messages here (distinct users are the keys)
    users: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    # user → Bullish minus Bearish labels here (zeros dropped: they do not vote)
    votes: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    # the SAMPLE_IDS smallest counted ids, ascending (a tuple of ints: the GC stops walking it)
    smallest: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)
    _score_sum: float | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        messages = self.messages
        for message_id, value in messages.items():
            user_id, label = unpack_user_label(value)
            messages[message_id] = pack_user_label(user_id, label)  # (user, label) given
            self._tally(user_id, label, 1)
        self.smallest = tuple(heapq.nsmallest(SAMPLE_IDS, messages))

    def user_label(self, message_id: int) -> tuple[int | None, str | None] | None:
        """(user id, label) of a counted message; None if not counted here."""
        value = self.messages.get(message_id)
        return None if value is None else unpack_user_label(value)

    def _tally(self, user_id: int | None, label: str | None, d: int) -> None:
        """Count one message (``d`` = 1) or uncount it (-1) in the tallies."""
        if user_id is not None:
            n = self.users.get(user_id, 0) + d
            if n:
                self.users[user_id] = n
            else:
                del self.users[user_id]
        if label == "Bullish":
            self.bullish += d
            vote = d
        elif label == "Bearish":
            self.bearish += d
            vote = -d
        else:
            return
        if user_id is None:
            if label == "Bullish":
                self.anon_bullish += d
            else:
                self.anon_bearish += d
            return
        v = self.votes.get(user_id, 0) + vote
        if v:
            self.votes[user_id] = v
        else:
            del self.votes[user_id]

    def _count(self, message_id: int, user_id: int | None, sentiment: str | None) -> None:
        old = self.messages.get(message_id)
        if old is not None:  # never twice (add_mention checks), but stay exact regardless
            self._uncount(message_id)
        self.messages[message_id] = pack_user_label(user_id, sentiment)
        self._tally(user_id, sentiment, 1)
        smallest = self.smallest
        if len(smallest) < SAMPLE_IDS or message_id < smallest[-1]:
            self.smallest = tuple(sorted((*smallest, message_id))[:SAMPLE_IDS])

    def _uncount(self, message_id: int) -> bool:
        value = self.messages.pop(message_id, None)
        if value is None:
            return False
        user_id, label = unpack_user_label(value)
        self._tally(user_id, label, -1)
        if message_id in self.smallest:  # rare: only then walk the pane again
            self.smallest = tuple(heapq.nsmallest(SAMPLE_IDS, self.messages))
        return True

    def _log(self, kind: str, message_id: int) -> None:
        if self._new is None:
            self._new = []
        self._new.append((kind, message_id))

    def _retracted(self) -> set[int]:
        if type(self.retracted) is not set:
            self.retracted = set(self.retracted)
        return self.retracted  # type: ignore[return-value]

    def add_message(self, message_id: int, user_id: int | None, sentiment: str | None) -> None:
        self._count(message_id, user_id, sentiment)
        self._log("m", message_id)

    def add_score(self, message_id: int, score: float) -> None:
        self.scores[message_id] = score
        self._score_sum = None
        self._log("s", message_id)

    def retract(self, message_id: int) -> bool:
        """Destroy ``message_id``; True when it had been counted here."""
        self._retracted().add(message_id)
        self._log("r", message_id)
        return self._uncount(message_id)

    def score_sum(self) -> float:
        """``sum(self.scores.values())`` (in insertion order, so windows stay bit-exact)."""
        if self._score_sum is None:
            self._score_sum = sum(self.scores.values())
        return self._score_sum

    def dirty(self) -> bool:
        return bool(self._new)

    def take_chunk(self) -> dict[str, Any]:
        """What changed since the last chunk, as one JSON-able row; numbers the chunk."""
        m: dict[str, Any] = {}
        s: dict[str, Any] = {}
        r: list[int] = []
        messages, scores = self.messages, self.scores
        for kind, message_id in self._new or ():
            if kind == "m":
                value = messages.get(message_id)
                m[str(message_id)] = [None, None] if value is None else list(
                    unpack_user_label(value))
            elif kind == "s":
                s[str(message_id)] = scores[message_id]
            else:
                r.append(message_id)
        self._new = None
        self.chunks += 1
        return {"m": m, "s": s, "r": r}

    def apply_chunk(self, chunk: dict[str, Any]) -> None:
        """Rebuild: apply one chunk row (in the order they were written)."""
        for k, v in chunk["m"].items():
            self._count(int(k), v[0], v[1])
        for k, v in chunk["s"].items():
            self.scores[int(k)] = v
        self._score_sum = None
        for message_id in chunk["r"]:
            self._retracted().add(message_id)
            self._uncount(message_id)
        self.chunks += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "m": {str(k): list(unpack_user_label(v)) for k, v in self.messages.items()},
            "s": {str(k): v for k, v in self.scores.items()},
            "r": sorted(self.retracted),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Pane:
        return cls(
            {int(k): (v[0], v[1]) for k, v in row["m"].items()},
            {int(k): v for k, v in row["s"].items()},
            set(row["r"]) if row["r"] else _NO_IDS,
        )


@dataclass
class SymbolState:
    """Everything stage 2 keeps for one symbol; one changelogged table row."""

    panes: dict[int, Pane] = field(default_factory=dict)
    pending: dict[str, list[int]] = field(default_factory=dict)  # spec key → open starts
    emitted: dict[str, dict[int, int]] = field(default_factory=dict)  # → start: revision
    detectors: DetectorState = field(default_factory=DetectorState)  # spike baselines
    max_event_ms: int = 0
    watermark_ms: int = NO_WATERMARK  # at the last close; rebuilds the partition's clock
    # replay after a crash: which input offset emitted each window, and the spike it fired
    emitted_by: dict[str, dict[int, int]] = field(default_factory=dict)
    spikes_sent: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    last_offset: int = -1  # last mentions offset that changed this row
    # (specs, earliest_end_ms(specs)) until `pending` changes: the engine asks before and after
    # every mention; only _mark_pending and close_windows change `pending`
    _earliest: tuple[tuple[WindowSpec, ...], int | None] | None = field(
        default=None, init=False, repr=False, compare=False)
    # (row name, spec key) → (copy of the marks, their JSON): see _marks_json
    _marks_cache: dict[tuple[str, str], tuple[dict[int, Any], dict[str, Any]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The whole state as one JSON-able dict (tests; see :meth:`meta_json` for rows)."""
        return {"panes": {str(k): p.to_json() for k, p in self.panes.items()},
                "pending": self.pending, **self.meta_json()}

    def meta_json(self) -> dict[str, Any]:
        """Everything but the panes and the open windows: the symbol's own table row.

        Panes have chunk rows of their own (:func:`pane_key`), so a busy symbol writes only
        what a pane gained. Open windows are not stored: they follow from the panes, the
        emitted marks and the watermark (:func:`states_from_rows`), and a batch spanning months
        of a replay can open tens of thousands of them (a row that large is refused by Kafka).
        """
        return {
            "emitted": self._marks_json("emitted", self.emitted),
            "detectors": self.detectors.to_json(),
            "max_event_ms": self.max_event_ms,
            "watermark_ms": self.watermark_ms,
            "emitted_by": self._marks_json("emitted_by", self.emitted_by),
            "spikes_sent": self._marks_json("spikes_sent", self.spikes_sent),
            "last_offset": self.last_offset,
        }

    def _marks_json(self, name: str, marks: dict[str, dict[int, Any]]) -> dict[str, Any]:
        """Per spec key, the marks with string keys (JSON objects).

        The row is rewritten after every batch that touches the symbol (``last_offset``),
        but its marks change only when a window closes or is corrected: an unchanged spec's
        dict is reused (comparing two dicts is cheaper than converting every key). Rows are
        read-only, so sharing is safe.
        """
        cache = self._marks_cache
        out = {}
        for key, by_start in marks.items():
            hit = cache.get((name, key))
            if hit is None or hit[0] != by_start:
                hit = cache[(name, key)] = (
                    dict(by_start), {str(st): v for st, v in by_start.items()})
            out[key] = hit[1]
        return out

    @classmethod
    def from_json(cls, row: dict[str, Any], panes: dict[int, Pane] | None = None) -> SymbolState:
        """From :meth:`to_json`, or from :meth:`meta_json` plus the symbol's pane rows."""
        return cls(
            panes=panes if panes is not None else {
                int(k): Pane.from_json(p) for k, p in row["panes"].items()},
            pending={k: list(v) for k, v in row.get("pending", {}).items()},
            emitted={s: {int(k): v for k, v in e.items()} for s, e in row["emitted"].items()},
            # a row of v1 (per-spec "baselines") starts cold: v2 learns other quantities
            detectors=(DetectorState.from_json(row["detectors"]) if "detectors" in row
                       else DetectorState()),
            max_event_ms=row["max_event_ms"],
            watermark_ms=row["watermark_ms"],
            emitted_by={
                k: {int(st): o for st, o in e.items()} for k, e in row["emitted_by"].items()
            },
            spikes_sent={
                k: {int(st): r for st, r in e.items()} for k, e in row["spikes_sent"].items()
            },
            last_offset=row["last_offset"],
        )

    def earliest_end_ms(self, specs: tuple[WindowSpec, ...]) -> int | None:
        """End of the first window still waiting to close, if any."""
        cached = self._earliest
        if cached is not None and cached[0] is specs:
            return cached[1]
        best = None
        pending = self.pending
        for spec in specs:
            starts = pending.get(spec.key)
            if starts:
                end = starts[0] + spec.size_ms
                if best is None or end < best:
                    best = end
        self._earliest = (specs, best)
        return best


PANE_KEY_SEP = "\t"  # never part of a symbol


def pane_key(symbol: str, pane_start_ms: int, chunk: int) -> str:
    """Table key of one chunk row of one pane of ``symbol``."""
    return f"{symbol}{PANE_KEY_SEP}{pane_start_ms}{PANE_KEY_SEP}{chunk}"


def split_row_key(key: str) -> tuple[str, int | None, int]:
    """``symbol`` → (symbol, None, 0); a :func:`pane_key` → (symbol, pane start, chunk)."""
    parts = key.split(PANE_KEY_SEP)
    if len(parts) == 1:
        return key, None, 0
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 0


def states_from_rows(rows: Any, cfg: WindowConfig) -> dict[str, SymbolState]:
    """Rebuild symbol states from ``(key, row)`` table rows: meta rows and pane chunk rows.

    Chunk rows are written before their symbol's meta row, so a crash between the two leaves
    a meta row behind its panes; the windows such panes open are marked pending again.
    """
    metas: dict[str, dict[str, Any]] = {}
    chunks: dict[str, dict[int, list[tuple[int, dict[str, Any]]]]] = {}
    for key, row in rows:
        if row is None:
            continue
        symbol, start, chunk = split_row_key(key)
        if start is None:
            metas[symbol] = row
        else:
            chunks.setdefault(symbol, {}).setdefault(start, []).append((chunk, row))
    empty = SymbolState().meta_json()
    states = {}
    for symbol in metas.keys() | chunks.keys():
        panes = {}
        for start, rows_of_pane in chunks.get(symbol, {}).items():
            pane = panes[start] = Pane()
            for _, chunk_row in sorted(rows_of_pane, key=lambda cr: cr[0]):
                pane.apply_chunk(chunk_row)
            pane.chunks = max(n for n, _ in rows_of_pane) + 1
        states[symbol] = SymbolState.from_json(metas.get(symbol, empty), panes)
    for state in states.values():
        for pane_start, pane in state.panes.items():
            if pane.messages or pane.scores:
                _mark_pending(state, pane_start, cfg, since_ms=state.watermark_ms)
    return states


@dataclass(frozen=True)
class WindowResult:
    """Final (or corrected) tallies of one symbol in one window."""

    symbol: str
    spec: WindowSpec
    start_ms: int
    message_count: int
    distinct_users: int
    bullish: int
    bearish: int
    unlabelled: int
    score_sum: float
    score_count: int
    revision: int
    sample_message_ids: tuple[int, ...]
    user_bullish: int = 0  # users whose labels here are mostly Bullish (each votes once)
    user_bearish: int = 0

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.spec.size_ms

    # Both records start with the symbol and window (what downstream upserts on), written out
    # in each: they are built for every closed window, so no helper dict is merged in.

    def volume_record(self, emitted_at_ms: int) -> dict[str, Any]:
        """A ``WindowVolume`` (window_volume.avsc)."""
        spec = self.spec
        return {
            "symbol": self.symbol,
            "window_start_ms": self.start_ms,
            "window_end_ms": self.start_ms + spec.size_ms,
            "window_size_ms": spec.size_ms,
            "window_advance_ms": spec.advance_ms,
            "message_count": self.message_count,
            "distinct_users": self.distinct_users,
            "bullish": self.bullish,
            "bearish": self.bearish,
            "unlabelled": self.unlabelled,
            "revision": self.revision,
            "emitted_at_ms": emitted_at_ms,
        }

    def sentiment_record(self, emitted_at_ms: int, warm: bool | None = None) -> dict[str, Any]:
        """A ``WindowSentiment`` (window_sentiment.avsc): per message and per user.

        :param warm: whether the symbol's spike detectors are warm (the board's "cold").
        """
        spec, bullish, bearish = self.spec, self.bullish, self.bearish
        interval = wilson_interval(bullish, bullish + bearish)
        users_bullish, users_bearish = self.user_bullish, self.user_bearish
        # the fields of UserSentiment.record_fields, without building the dataclass
        users = wilson_interval(users_bullish, users_bullish + users_bearish)
        return {
            "symbol": self.symbol,
            "window_start_ms": self.start_ms,
            "window_end_ms": self.start_ms + spec.size_ms,
            "window_size_ms": spec.size_ms,
            "window_advance_ms": spec.advance_ms,
            "bullish": bullish,
            "bearish": bearish,
            "bullish_ratio": bullish_ratio(bullish, bearish),
            "bullish_ratio_low": interval[0] if interval else None,
            "bullish_ratio_high": interval[1] if interval else None,
            "sentiment_score_mean": (
                self.score_sum / self.score_count if self.score_count else None
            ),
            "sentiment_score_count": self.score_count,
            "revision": self.revision,
            "emitted_at_ms": emitted_at_ms,
            "user_bullish": users_bullish,
            "user_bearish": users_bearish,
            "user_bullish_ratio": bullish_ratio(users_bullish, users_bearish),
            "user_bullish_ratio_low": users[0] if users else None,
            "user_bullish_ratio_high": users[1] if users else None,
            "baseline_warm": warm,
        }


def spike_record(
    result: WindowResult, verdict: detectors.Verdict, detected_at_ms: int
) -> dict[str, Any]:
    """A ``Spike`` (spike.avsc) for a window whose detector fired."""
    return {
        "symbol": result.symbol,
        "window_start_ms": result.start_ms,
        "window_end_ms": result.end_ms,
        "window_size_ms": result.spec.size_ms,
        **verdict.record_fields(),
        "bullish_ratio": bullish_ratio(result.bullish, result.bearish),
        "sample_message_ids": list(result.sample_message_ids),
        "detected_at_ms": detected_at_ms,
    }


@dataclass(frozen=True)
class Closed:
    """A window that became final, with the alert when a detector fired on it."""

    result: WindowResult
    verdict: detectors.Verdict | None = None
    warm: bool | None = None  # the symbol's detectors warm once this window was scored


@dataclass(frozen=True)
class Applied:
    """What one mention did to a symbol's state."""

    counted: bool = False
    late: bool = False  # beyond grace (or beyond the revision horizon for a retraction)
    lateness_ms: int = 0
    corrections: tuple[WindowResult, ...] = ()


def window_result(
    state: SymbolState, symbol: str, spec: WindowSpec, start_ms: int, revision: int,
    pane_ms: int,
) -> WindowResult:
    """The window's tallies, merged from its panes' (see :class:`Pane`)."""
    if spec.size_ms == pane_ms:  # one pane (the 1 min windows)
        pane = state.panes.get(start_ms)
        parts = [] if pane is None else [pane]
    else:
        parts = _panes_of(state.panes, start_ms, start_ms + spec.size_ms, pane_ms)
    count = bullish = bearish = anon_bullish = anon_bearish = score_count = 0
    score_sum = 0.0
    for pane in parts:
        count += len(pane.messages)
        bullish += pane.bullish
        bearish += pane.bearish
        anon_bullish += pane.anon_bullish
        anon_bearish += pane.anon_bearish
        score_sum += pane.score_sum()
        score_count += len(pane.scores)
    user_bullish, user_bearish = _user_votes([p.votes for p in parts if p.votes])
    if len(parts) == 1:
        distinct, sample = len(parts[0].users), tuple(parts[0].smallest)
    else:
        distinct = len(set().union(*[p.users for p in parts]))
        sample = tuple(sorted([i for p in parts for i in p.smallest])[:SAMPLE_IDS])
    return WindowResult(
        symbol=symbol,
        spec=spec,
        start_ms=start_ms,
        message_count=count,
        distinct_users=distinct,
        bullish=bullish,
        bearish=bearish,
        unlabelled=count - bullish - bearish,
        score_sum=score_sum,
        score_count=score_count,
        revision=revision,
        sample_message_ids=sample,
        user_bullish=user_bullish + anon_bullish,
        user_bearish=user_bearish + anon_bearish,
    )


def _panes_of(panes: dict[int, Pane], start_ms: int, end_ms: int, pane_ms: int) -> list[Pane]:
    """The panes in [start, end), by start (the order sums are taken in)."""
    if len(panes) * 4 < (end_ms - start_ms) // pane_ms:  # few panes: look them over
        return [panes[s] for s in sorted(s for s in panes if start_ms <= s < end_ms)]
    return [p for p in map(panes.get, range(start_ms, end_ms, pane_ms)) if p is not None]


def _user_votes(votes: list[dict[int, int]]) -> tuple[int, int]:
    """(bullish users, bearish users) of panes' per-user votes: each user once, by the sign
    of their net vote over the window (as :func:`~processors.sentiment.user_votes`)."""
    if not votes:
        return 0, 0
    if len(votes) == 1:
        tally = votes[0]
    else:
        biggest = max(votes, key=len)
        tally = dict(biggest)
        for pane_votes in votes:
            if pane_votes is not biggest:
                for user_id, v in pane_votes.items():
                    tally[user_id] = tally.get(user_id, 0) + v
    positive = sum(1 for v in tally.values() if v > 0)
    negative = sum(1 for v in tally.values() if v < 0)
    return positive, negative


def _mark_pending(
    state: SymbolState, event_ms: int, cfg: WindowConfig, since_ms: int | None = None
) -> None:
    """Mark the windows holding ``event_ms`` as open, unless emitted. With ``since_ms`` (a
    watermark), only windows whose emitted marks would still be kept (see :func:`_forget`)."""
    for spec in cfg.specs:
        pending = state.pending.setdefault(spec.key, [])
        emitted = state.emitted.get(spec.key, {})
        oldest = None if since_ms is None else since_ms - spec.size_ms - cfg.revision_horizon_ms
        for start in window_starts(event_ms, spec):
            if start in emitted or (oldest is not None and start < oldest):
                continue
            # kept sorted by binary search: a replay can open thousands before a close
            at = bisect.bisect_left(pending, start)
            if at == len(pending) or pending[at] != start:
                pending.insert(at, start)
                state._earliest = None


def add_mention(
    state: SymbolState, mention: Mention, watermark_ms: int, cfg: WindowConfig
) -> Applied:
    """Apply a MESSAGE, SCORE or RETRACTION mention to its symbol's state (in place).

    :param watermark_ms: the partition watermark *before* this mention.
    """
    t = mention.created_at_ms
    pane_start = window_start_ms(t, cfg.pane_ms)
    if mention.kind is MentionKind.RETRACTION:
        return _retract(state, mention, watermark_ms, cfg)
    if t < watermark_ms:
        if _already_in(state.panes.get(pane_start), mention):
            return Applied()  # redelivered (a replay) after its window closed: counted then
        return Applied(late=True, lateness_ms=watermark_ms - t)
    state.max_event_ms = max(state.max_event_ms, t)
    pane = state.panes.get(pane_start)
    if pane is None:  # (not setdefault: a Pane is not free to build and throw away)
        pane = state.panes[pane_start] = Pane()
    # every mention of a pane falls in the same windows: mark them once, on its first one
    first_in_pane = not pane.messages and not pane.scores
    if mention.kind is MentionKind.MESSAGE:
        if mention.message_id in pane.messages or mention.message_id in pane.retracted:
            return Applied()  # redelivered, or already destroyed
        pane.add_message(mention.message_id, mention.user_id, mention.sentiment)
    elif mention.kind is MentionKind.SCORE:
        if mention.message_id in pane.scores or mention.sentiment_score is None:
            return Applied()
        pane.add_score(mention.message_id, mention.sentiment_score)
    else:
        raise ValueError(f"not a data mention: {mention.kind}")
    if first_in_pane:
        _mark_pending(state, t, cfg)
    return Applied(counted=True)


def _already_in(pane: Pane | None, mention: Mention) -> bool:
    if pane is None:
        return False
    if mention.kind is MentionKind.SCORE:
        return mention.message_id in pane.scores
    return mention.message_id in pane.messages or mention.message_id in pane.retracted


def _retract(
    state: SymbolState, mention: Mention, watermark_ms: int, cfg: WindowConfig
) -> Applied:
    t = mention.created_at_ms
    pane_start = window_start_ms(t, cfg.pane_ms)
    if pane_start + cfg.retain_ms <= watermark_ms:
        # its windows are past the revision horizon: report it, never correct silently
        return Applied(late=True, lateness_ms=watermark_ms - t)
    pane = state.panes.get(pane_start)
    if pane is None:
        pane = state.panes[pane_start] = Pane()
    if mention.message_id in pane.retracted:
        return Applied()  # a second destroy
    if not pane.retract(mention.message_id):
        return Applied()  # never counted here (late, duplicate retraction, before our time)
    corrections: list[WindowResult] = []
    symbol = mention.symbol
    for spec in cfg.specs:
        emitted = state.emitted.get(spec.key, {})
        for start in window_starts(t, spec):
            if start in emitted:
                emitted[start] += 1
                corrections.append(
                    window_result(state, symbol, spec, start, emitted[start], cfg.pane_ms)
                )
    return Applied(counted=True, corrections=tuple(corrections))


def close_windows(
    state: SymbolState, symbol: str, watermark_ms: int, cfg: WindowConfig
) -> list[Closed]:
    """Emit every pending window whose end the watermark reached, oldest end first; score
    the detectors' windows; forget panes and emitted marks past the revision horizon."""
    due: list[tuple[int, int, WindowSpec, int]] = []
    for spec in cfg.specs:
        pending = state.pending.get(spec.key, [])
        n = bisect.bisect_right(pending, watermark_ms - spec.size_ms)
        if n:
            due.extend((start + spec.size_ms, spec.size_ms, spec, start) for start in pending[:n])
            del pending[:n]
            state._earliest = None
    due.sort(key=lambda d: (d[0], d[1], d[3]))
    closed: list[Closed] = []
    rule = cfg.rule
    scored = cfg.detector_specs
    # warmth changes only when a detector observes a window
    warm = None if rule is None else detectors.is_warm(state.detectors, rule)
    for _, _, spec, start in due:
        result = window_result(state, symbol, spec, start, 0, cfg.pane_ms)
        state.emitted.setdefault(spec.key, {})[start] = 0
        verdict = None
        # a window left without messages (destroys, /sentiment scores only) is a gap to the
        # detectors, as it is in the evaluation (bench/evaluate.py), which sees messages only
        if rule is not None and result.message_count and spec in scored:
            verdict = detectors.observe(state.detectors, start, spec.size_ms,
                                        result.message_count, result.distinct_users, rule)
            warm = detectors.is_warm(state.detectors, rule)
        closed.append(Closed(result, verdict, warm))
    state.watermark_ms = max(state.watermark_ms, watermark_ms)
    _forget(state, cfg)
    return closed


def _forget(state: SymbolState, cfg: WindowConfig) -> None:
    wm = state.watermark_ms
    for pane_start in [p for p in state.panes if p + cfg.retain_ms <= wm]:
        del state.panes[pane_start]
    for spec in cfg.specs:
        horizon = wm - spec.size_ms - cfg.revision_horizon_ms
        for marks in (state.emitted, state.emitted_by, state.spikes_sent):
            emitted = marks.get(spec.key)
            if emitted:
                for start in [s for s in emitted if s < horizon]:
                    del emitted[start]


def is_idle(state: SymbolState) -> bool:
    """Nothing open and nothing to correct: only the detector state is left in the row."""
    return not state.panes and not any(state.pending.values())


def window_config(settings: Settings) -> WindowConfig:
    """Windows and the spike detectors (``spike_*``, ``surge_*``) from the settings.

    :raises ValueError: a detector's window is not one of the tumbling ``windows``.
    """
    specs = parse_windows(settings.windows, settings.hopping_windows)
    rule = detectors.rule_from_settings(settings)
    tumbling = {s.size_ms for s in specs if not s.hopping}
    scored = [*rule.burst_sizes_ms, *([rule.surge_size_ms] if rule.surge_size_ms else [])]
    missing = [size for size in scored if size not in tumbling]
    if missing:
        raise ValueError(
            f"spike windows {[f'{m // 1000}s' for m in missing]} (PULSE_SPIKE_WINDOWS, "
            f"PULSE_SURGE_WINDOW) are not among the tumbling windows {settings.windows!r}"
        )
    return WindowConfig(
        specs=specs,
        grace_ms=settings.grace_ms,
        revision_horizon_ms=settings.revision_horizon_ms,
        rule=rule,
    )

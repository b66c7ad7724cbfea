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
import json
import math
import struct
import sys
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, reduce
from itertools import compress
from typing import Any

from pulse.durations import parse_duration_ms
from pulse.processors import detectors
from pulse.processors.detectors import DetectorRule, DetectorState
from pulse.processors.mentions import Mention, MentionKind
from pulse.processors.progress import NO_WATERMARK
from pulse.processors.sentiment import bullish_ratio, wilson_interval
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
        WindowSpec(parse_duration_ms(t), parse_duration_ms(t))
        for t in tumbling.split(",")
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
_OTHER_LABEL = 3  # a label the schema does not have: kept by message id in ``Pane.odd``
_HAS_USER = 4
_NO_USER = -(2**63)  # the user column's value for a message without a user id
# bytes.translate tables: a message's code → 1 where it is a Bullish (Bearish) vote of a user
_BULL_VOTERS = bytes(int(c == _HAS_USER | 1) for c in range(256))
_BEAR_VOTERS = bytes(int(c == _HAS_USER | 2) for c in range(256))
_SMALL_WINDOW = 32  # messages; below, a window's users are tallied by a plain loop
_CHUNK_HEAD = struct.Struct("<BqIII")  # version, symbol's last offset, #messages, scores, destroys
_CHUNK_VERSION = 1
_LITTLE = sys.byteorder == "little"


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


def _code(user_id: int | None, label: str | None) -> int:
    code = _LABEL_CODES.get(label, _OTHER_LABEL)
    return code if user_id is None else code | _HAS_USER


def _column_bytes(column: array[int] | array[float]) -> bytes:
    """An int64/float64 column as little-endian bytes (the chunk rows' byte order)."""
    if _LITTLE:
        return column.tobytes()
    swapped = array(column.typecode, column)
    swapped.byteswap()
    return swapped.tobytes()


def _column(typecode: str, data: bytes | memoryview) -> array[Any]:
    column = array(typecode)
    column.frombytes(data)  # (array(typecode, memoryview) would take each byte as an item)
    if not _LITTLE:
        column.byteswap()
    return column


def decode_chunk(
    chunk: bytes,
) -> tuple[int, list[tuple[int, int | None, str | None]], list[tuple[int, float]], list[int]]:
    """A binary chunk row (:meth:`Pane.take_chunk`): (the symbol's last offset, messages as
    (id, user, label), scores as (id, score), destroyed ids)."""
    _, last_offset, n_m, n_s, n_r = _CHUNK_HEAD.unpack_from(chunk)
    view, at = memoryview(chunk), _CHUNK_HEAD.size
    m_ids = _column("q", view[at : at + 8 * n_m])
    m_users = _column("q", view[at + 8 * n_m : at + 16 * n_m])
    m_codes = bytes(view[at + 16 * n_m : at + 17 * n_m])
    at += 17 * n_m
    s_ids = _column("q", view[at : at + 8 * n_s])
    s_values = _column("d", view[at + 8 * n_s : at + 16 * n_s])
    at += 16 * n_s
    r_ids = _column("q", view[at : at + 8 * n_r])
    odd = json.loads(bytes(view[at + 8 * n_r :])) if len(chunk) > at + 8 * n_r else {}
    messages = [
        (
            i,
            u if c & _HAS_USER else None,
            odd.get(str(i)) if c & 3 == _OTHER_LABEL else _LABELS[c & 3],
        )
        for i, u, c in zip(m_ids, m_users, m_codes, strict=True)
    ]
    return last_offset, messages, list(zip(s_ids, s_values, strict=True)), list(r_ids)


def chunk_json(chunk: bytes) -> dict[str, Any]:
    """A binary chunk row as the JSON-able dict of :meth:`Pane.to_json` (tests, debugging)."""
    _, messages, scores, destroys = decode_chunk(chunk)
    return {
        "m": {str(i): [u, label] for i, u, label in messages},
        "s": {str(i): v for i, v in scores},
        "r": destroys,
    }


class _Chunk:
    """What a pane gained since its last chunk row, as the row's columns. A message counted
    and then destroyed before the row is written is in both its messages and its destroys
    (applied in that order, it ends uncounted)."""

    __slots__ = ("m_codes", "m_ids", "m_users", "odd", "r_ids", "s_ids", "s_values")

    def __init__(self) -> None:
        self.m_ids, self.m_users, self.m_codes = array("q"), array("q"), bytearray()
        self.odd: dict[str, str] = {}  # labels outside the schema, by message id
        self.s_ids, self.s_values, self.r_ids = array("q"), array("d"), array("q")

    def encode(self, last_offset: int) -> bytes:
        return b"".join(
            (
                _CHUNK_HEAD.pack(
                    _CHUNK_VERSION, last_offset, len(self.m_ids), len(self.s_ids), len(self.r_ids)
                ),
                _column_bytes(self.m_ids),
                _column_bytes(self.m_users),
                bytes(self.m_codes),
                _column_bytes(self.s_ids),
                _column_bytes(self.s_values),
                _column_bytes(self.r_ids),
                json.dumps(self.odd).encode() if self.odd else b"",
            )
        )


class Pane:
    """One pane of one symbol: the counted messages (id, user, label), the /sentiment scores
    by message id, and the ids destroyed.

    Kept as columns: ``ids`` sorted ascending with ``users`` and ``codes`` (label code, plus
    4 when the message has a user id) beside them, ``score_ids``/``score_values`` likewise.
    That is 17 bytes per counted message, no Python object per message (a dict entry with
    two int objects costs ~110 bytes and is walked by the GC), a binary search finds an id,
    and the smallest ids are the first ones. Label counts are kept up to date on every add
    and destroy; distinct users and per-user votes are counted from the columns when a
    window closes (:func:`window_result`).

    Persisted as append-only *chunks*: each :meth:`take_chunk` returns only what was added
    since the last one, so a hot symbol's growing pane is never rewritten whole.
    """

    __slots__ = (
        "_new",
        "_score_sum",
        "anon_bearish",
        "anon_bullish",
        "bearish",
        "bullish",
        "chunks",
        "codes",
        "ids",
        "odd",
        "retracted",
        "score_ids",
        "score_values",
        "users",
    )

    def __init__(self) -> None:
        self.ids = array("q")
        self.users = array("q")
        self.codes = bytearray()
        self.odd: dict[int, str] | None = None  # labels outside the schema, by message id
        # a shared empty tuple until the first score (most panes never get one)
        self.score_ids: array[int] | tuple[()] = ()
        self.score_values: array[float] | tuple[()] = ()
        # a shared empty frozenset until the first destroy (few panes ever see one)
        self.retracted: set[int] | frozenset[int] = _NO_IDS
        self.bullish = self.bearish = 0
        # labelled messages without a user id: each is a voter of its own
        self.anon_bullish = self.anon_bearish = 0
        self.chunks = 0  # chunk rows written so far
        # ("m" | "s" | "r", id) added since the last chunk; None when there is none
        self._new: _Chunk | None = None  # what the next chunk row holds; None: nothing
        self._score_sum: float | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pane) and (
            self.messages,
            self.scores,
            set(self.retracted),
            self.chunks,
        ) == (other.messages, other.scores, set(other.retracted), other.chunks)

    def __repr__(self) -> str:
        return (
            f"Pane(messages={self.messages}, scores={self.scores}, retracted={set(self.retracted)})"
        )

    # --- reading ----------------------------------------------------------------------------

    @property
    def messages(self) -> dict[int, tuple[int | None, str | None]]:
        """Counted message id → (user id, label) (tests and JSON; the engine reads columns)."""
        return {i: self._user_label_at(n) for n, i in enumerate(self.ids)}

    @property
    def scores(self) -> dict[int, float]:
        return dict(zip(self.score_ids, self.score_values, strict=True))

    def _index(self, ids: Sequence[int], message_id: int) -> int:
        """Position of ``message_id`` in the sorted column ``ids``; -1 when absent."""
        at = bisect.bisect_left(ids, message_id)
        return at if at < len(ids) and ids[at] == message_id else -1

    def counts(self, message_id: int) -> bool:
        """``message_id`` is counted here."""
        ids = self.ids
        return bool(ids) and ids[0] <= message_id <= ids[-1] and self._index(ids, message_id) >= 0

    def has_score(self, message_id: int) -> bool:
        return self._index(self.score_ids, message_id) >= 0

    def empty(self) -> bool:
        return not self.ids and not self.score_ids

    def smallest(self) -> tuple[int, ...]:
        """The SAMPLE_IDS smallest counted ids, ascending."""
        return tuple(self.ids[:SAMPLE_IDS])

    def _user_label_at(self, at: int) -> tuple[int | None, str | None]:
        code = self.codes[at]
        user = self.users[at] if code & _HAS_USER else None
        label = (
            self.odd[self.ids[at]] if code & 3 == _OTHER_LABEL and self.odd else _LABELS[code & 3]
        )
        return user, label

    def user_label(self, message_id: int) -> tuple[int | None, str | None] | None:
        """(user id, label) of a counted message; None if not counted here."""
        at = self._index(self.ids, message_id)
        return None if at < 0 else self._user_label_at(at)

    def score_sum(self) -> float:
        """The scores' sum, in message id order (the same whatever order they arrived in)."""
        if self._score_sum is None:
            self._score_sum = sum(self.score_values)
        return self._score_sum

    # --- changing ---------------------------------------------------------------------------

    def _tally(self, code: int, d: int) -> None:
        label = code & 3
        if label == 1:
            self.bullish += d
            if not code & _HAS_USER:
                self.anon_bullish += d
        elif label == 2:
            self.bearish += d
            if not code & _HAS_USER:
                self.anon_bearish += d

    def _count(self, message_id: int, user_id: int | None, label: str | None) -> int:
        """Count a message; returns its code (label code, + 4 with a user id)."""
        ids = self.ids
        at = bisect.bisect_left(ids, message_id)
        if at < len(ids) and ids[at] == message_id:  # never twice (add_mention checks)
            self._uncount_at(at)
        code = _code(user_id, label)
        if code & 3 == _OTHER_LABEL:
            if self.odd is None:
                self.odd = {}
            self.odd[message_id] = label  # type: ignore[assignment]
        user = _NO_USER if user_id is None else user_id
        if at == len(ids):  # ids mostly arrive in order
            ids.append(message_id)
            self.users.append(user)
            self.codes.append(code)
        else:
            ids.insert(at, message_id)
            self.users.insert(at, user)
            self.codes.insert(at, code)
        self._tally(code, 1)
        return code

    def _uncount_at(self, at: int) -> None:
        code = self.codes[at]
        if self.odd:
            self.odd.pop(self.ids[at], None)
        del self.ids[at], self.users[at], self.codes[at]
        self._tally(code, -1)

    def _uncount(self, message_id: int) -> bool:
        at = self._index(self.ids, message_id)
        if at < 0:
            return False
        self._uncount_at(at)
        return True

    def _set_score(self, message_id: int, score: float) -> None:
        ids, values = self.score_ids, self.score_values
        if isinstance(ids, tuple) or isinstance(values, tuple):  # the shared empty tuples
            ids, values = array("q"), array("d")
            self.score_ids, self.score_values = ids, values
        at = bisect.bisect_left(ids, message_id)
        if at < len(ids) and ids[at] == message_id:
            values[at] = score
        elif at == len(ids):
            ids.append(message_id)
            values.append(score)
        else:
            ids.insert(at, message_id)
            values.insert(at, score)
        self._score_sum = None

    def _chunk(self) -> _Chunk:
        if self._new is None:
            self._new = _Chunk()
        return self._new

    def _retracted(self) -> set[int]:
        if type(self.retracted) is not set:
            self.retracted = set(self.retracted)
        return self.retracted

    def add_message(self, message_id: int, user_id: int | None, sentiment: str | None) -> None:
        code = self._count(message_id, user_id, sentiment)
        new = self._chunk()
        new.m_ids.append(message_id)
        new.m_users.append(_NO_USER if user_id is None else user_id)
        new.m_codes.append(code)
        if code & 3 == _OTHER_LABEL:
            new.odd[str(message_id)] = sentiment  # type: ignore[assignment]

    def add_score(self, message_id: int, score: float) -> None:
        self._set_score(message_id, score)
        new = self._chunk()
        new.s_ids.append(message_id)
        new.s_values.append(score)

    def retract(self, message_id: int) -> bool:
        """Destroy ``message_id``; True when it had been counted here."""
        self._retracted().add(message_id)
        self._chunk().r_ids.append(message_id)
        return self._uncount(message_id)

    # --- chunk rows -------------------------------------------------------------------------

    def dirty(self) -> bool:
        return self._new is not None

    def take_chunk(self, last_offset: int = -1) -> bytes:
        """What changed since the last chunk, as one binary row (see docs/processors.md,
        "State"); numbers the chunk. ``last_offset`` is the symbol's, kept with the row."""
        new, self._new = self._new or _Chunk(), None
        self.chunks += 1
        return new.encode(last_offset)

    def apply_chunk(self, chunk: bytes | dict[str, Any]) -> int:
        """Rebuild: apply one chunk row (in the order they were written); returns the
        symbol's last offset it carries (-1 for a JSON row of the earlier format)."""
        if isinstance(chunk, dict) or chunk[:1] == b"{":
            self._apply_json_chunk(chunk if isinstance(chunk, dict) else json.loads(chunk))
            return -1
        last_offset, messages, scores, destroys = decode_chunk(chunk)
        for message_id, user, label in messages:
            self._count(message_id, user, label)
        for message_id, score in scores:
            self._set_score(message_id, score)
        self._destroy_all(destroys)
        self.chunks += 1
        return last_offset

    def _destroy_all(self, message_ids: Any) -> None:
        for message_id in message_ids:
            self._retracted().add(message_id)
            self._uncount(message_id)

    def _apply_json_chunk(self, chunk: dict[str, Any]) -> None:
        for k, v in chunk["m"].items():
            self._count(int(k), v[0], v[1])
        for k, v in chunk["s"].items():
            self._set_score(int(k), v)
        self._destroy_all(chunk["r"])
        self.chunks += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "m": {str(k): list(v) for k, v in self.messages.items()},
            "s": {str(k): v for k, v in self.scores.items()},
            "r": sorted(self.retracted),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Pane:
        pane = cls()
        pane._apply_json_chunk(row)
        pane.chunks = 0
        return pane


@dataclass
class SymbolState:
    """Everything stage 2 keeps for one symbol; one changelogged table row."""

    panes: dict[int, Pane] = field(default_factory=dict)
    pending: dict[str, list[int]] = field(default_factory=dict)  # spec key → open starts
    emitted: dict[str, dict[int, int]] = field(default_factory=dict)  # → start: revision
    detectors: DetectorState = field(default_factory=DetectorState)  # spike baselines
    watermark_ms: int = NO_WATERMARK  # at the last close; rebuilds the partition's clock
    # replay after a crash: which input offset emitted each window, and the spike it fired
    emitted_by: dict[str, dict[int, int]] = field(default_factory=dict)
    spikes_sent: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    last_offset: int = -1  # last mentions offset that changed this row
    # (specs, earliest_end_ms(specs)) until `pending` changes: the engine asks before and after
    # every mention; only _mark_pending and close_windows change `pending`
    _earliest: tuple[tuple[WindowSpec, ...], int | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def to_json(self) -> dict[str, Any]:
        """The whole state as one JSON-able dict (tests; see :meth:`meta_json` for rows)."""
        return {
            "panes": {str(k): p.to_json() for k, p in self.panes.items()},
            "pending": self.pending,
            **self.meta_json(),
        }

    def meta_json(self) -> dict[str, Any]:
        """Everything but the panes and the open windows: the symbol's own table row.

        Panes have chunk rows of their own (:func:`pane_key`), so a busy symbol writes only
        what a pane gained. Open windows are not stored: they follow from the panes, the
        emitted marks and the watermark (:func:`states_from_rows`), and a batch spanning months
        of a replay can open tens of thousands of them (a row that large is refused by Kafka).
        """
        return {
            "emitted": self._marks_json(self.emitted),
            "detectors": self.detectors.to_json(),
            "watermark_ms": self.watermark_ms,
            "emitted_by": self._marks_json(self.emitted_by),
            "spikes_sent": self._marks_json(self.spikes_sent),
            "last_offset": self.last_offset,
        }

    @staticmethod
    def _marks_json(marks: dict[str, dict[int, Any]]) -> dict[str, Any]:
        """Per spec key, the marks with string keys (JSON objects)."""
        return {key: {str(st): v for st, v in by_start.items()} for key, by_start in marks.items()}

    @classmethod
    def from_json(cls, row: dict[str, Any], panes: dict[int, Pane] | None = None) -> SymbolState:
        """From :meth:`to_json`, or from :meth:`meta_json` plus the symbol's pane rows."""
        return cls(
            panes=panes
            if panes is not None
            else {int(k): Pane.from_json(p) for k, p in row["panes"].items()},
            pending={k: list(v) for k, v in row.get("pending", {}).items()},
            emitted={s: {int(k): v for k, v in e.items()} for s, e in row["emitted"].items()},
            # a row of v1 (per-spec "baselines") starts cold: v2 learns other quantities
            detectors=(
                DetectorState.from_json(row["detectors"]) if "detectors" in row else DetectorState()
            ),
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
    """Rebuild symbol states from ``(key, row)`` table rows: meta rows (JSON) and pane chunk
    rows (binary, :meth:`Pane.take_chunk`).

    Chunk rows are written before their symbol's meta row, and a meta row only when the
    symbol's marks change (a close, a correction), so a meta row may be behind its panes;
    the windows such panes open are marked pending again. A symbol's last offset is the
    latest of its meta row's and its chunk rows'.
    """
    metas: dict[str, dict[str, Any]] = {}
    chunks: dict[str, dict[int, list[tuple[int, Any]]]] = {}
    for key, row in rows:
        if row is None:
            continue
        symbol, start, chunk = split_row_key(key)
        if start is None:
            metas[symbol] = json.loads(row) if isinstance(row, (bytes, str)) else row
        else:
            chunks.setdefault(symbol, {}).setdefault(start, []).append((chunk, row))
    empty = SymbolState().meta_json()
    states = {}
    for symbol in metas.keys() | chunks.keys():
        panes = {}
        last_offset = -1
        for start, rows_of_pane in chunks.get(symbol, {}).items():
            pane = panes[start] = Pane()
            for _, chunk_row in sorted(rows_of_pane, key=lambda cr: cr[0]):
                last_offset = max(last_offset, pane.apply_chunk(chunk_row))
            pane.chunks = max(n for n, _ in rows_of_pane) + 1
        state = states[symbol] = SymbolState.from_json(metas.get(symbol, empty), panes)
        state.last_offset = max(state.last_offset, last_offset)
    for state in states.values():
        for pane_start, pane in state.panes.items():
            if not pane.empty():
                _mark_pending(state, pane_start, cfg, since_ms=state.watermark_ms)
    return states


@dataclass(slots=True)  # (not frozen: a frozen init costs ~3 µs a window; never mutated)
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
    result: WindowResult, verdict: detectors.Detection, detected_at_ms: int
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


@dataclass(slots=True)  # (as WindowResult)
class Closed:
    """A window that became final, with the alert when a detector fired on it."""

    result: WindowResult
    verdict: detectors.Detection | None = None
    warm: bool | None = None  # the symbol's detectors warm once this window was scored


@dataclass(frozen=True)
class Applied:
    """What one mention did to a symbol's state."""

    counted: bool = False
    late: bool = False  # beyond grace (or beyond the revision horizon for a retraction)
    lateness_ms: int = 0
    corrections: tuple[WindowResult, ...] = ()


_NOTHING, _COUNTED = Applied(), Applied(counted=True)  # (shared: an Applied is immutable)


def window_result(
    state: SymbolState,
    symbol: str,
    spec: WindowSpec,
    start_ms: int,
    revision: int,
    pane_ms: int,
    memo: dict[tuple[int, ...], Any] | None = None,
) -> WindowResult:
    """The window's tallies, merged from its panes' (see :class:`Pane`).

    :param memo: users and votes by the panes they were counted from, for windows closed
        together while no pane changes (:func:`close_windows`): windows over the same panes
        (a sparse symbol's hopping windows, the last hour of a stream that went quiet) count
        them once.
    """
    if spec.size_ms == pane_ms:  # one pane (the 1 min windows)
        pane = state.panes.get(start_ms)
        parts = [] if pane is None else [pane]
    else:
        parts = _panes_of(state.panes, start_ms, start_ms + spec.size_ms, pane_ms)
    count = bullish = bearish = anon_bullish = anon_bearish = score_count = 0
    score_sum = 0.0
    for pane in parts:
        count += len(pane.ids)
        bullish += pane.bullish
        bearish += pane.bearish
        anon_bullish += pane.anon_bullish
        anon_bearish += pane.anon_bearish
        if pane.score_ids:
            score_sum += pane.score_sum()
            score_count += len(pane.score_ids)
    key = tuple(map(id, parts)) if memo is not None else ()
    users = memo.get(key) if memo is not None else None
    if users is None:
        users = _users_of(parts, count)
        if memo is not None:
            memo[key] = users
    distinct, (user_bullish, user_bearish), sample = users
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


def _users_of(parts: list[Pane], count: int) -> tuple[int, tuple[int, int], tuple[int, ...]]:
    """Distinct users, (bullish users, bearish users) and the sample ids of the panes."""
    if count <= _SMALL_WINDOW:
        distinct, votes = _small_window_users(parts)
    else:
        distinct, votes = _distinct_users(parts), _user_votes(parts)
    if len(parts) == 1:
        sample = parts[0].smallest()
    else:
        sample = tuple(sorted([i for p in parts for i in p.ids[:SAMPLE_IDS]])[:SAMPLE_IDS])
    return distinct, votes, sample


def _small_window_users(parts: list[Pane]) -> tuple[int, tuple[int, int]]:
    """:func:`_distinct_users` and :func:`_user_votes` in one plain loop (few messages)."""
    users: set[int] = set()
    net: dict[int, int] = {}
    for pane in parts:
        for user, code in zip(pane.users, pane.codes, strict=True):
            if code & _HAS_USER:
                users.add(user)
                label = code & 3
                if label == 1:
                    net[user] = net.get(user, 0) + 1
                elif label == 2:
                    net[user] = net.get(user, 0) - 1
    return len(users), (
        sum(1 for v in net.values() if v > 0),
        sum(1 for v in net.values() if v < 0),
    )


def _distinct_users(parts: list[Pane]) -> int:
    """Distinct user ids of the panes' counted messages (a set built from the columns in C)."""
    users = set(parts[0].users) if len(parts) == 1 else set().union(*[p.users for p in parts])
    users.discard(_NO_USER)
    return len(users)


def _user_votes(parts: list[Pane]) -> tuple[int, int]:
    """(bullish users, bearish users) of the panes' labelled messages with a user id: each
    user once, by the sign of their net vote over the window (as
    :func:`~processors.sentiment.user_votes`); counted from the columns in C."""
    bull: Counter[int] = Counter()
    bear: Counter[int] = Counter()
    for pane in parts:
        if pane.bullish > pane.anon_bullish:
            bull.update(compress(pane.users, pane.codes.translate(_BULL_VOTERS)))
        if pane.bearish > pane.anon_bearish:
            bear.update(compress(pane.users, pane.codes.translate(_BEAR_VOTERS)))
    if not bear or not bull:
        return len(bull), len(bear)
    # only users who voted both ways need comparing (few: most users keep to one side)
    both = bull.keys() & bear.keys()
    positive, negative = len(bull) - len(both), len(bear) - len(both)
    for user in both:
        net = bull[user] - bear[user]
        if net > 0:
            positive += 1
        elif net < 0:
            negative += 1
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
            return _NOTHING  # redelivered (a replay) after its window closed: counted then
        return Applied(late=True, lateness_ms=watermark_ms - t)
    pane = state.panes.get(pane_start)
    if pane is None:  # (not setdefault: a Pane is not free to build and throw away)
        pane = state.panes[pane_start] = Pane()
    # every mention of a pane falls in the same windows: mark them once, on its first one
    first_in_pane = pane.empty()
    if mention.kind is MentionKind.MESSAGE:
        if pane.counts(mention.message_id) or mention.message_id in pane.retracted:
            return _NOTHING  # redelivered, or already destroyed
        pane.add_message(mention.message_id, mention.user_id, mention.sentiment)
    elif mention.kind is MentionKind.SCORE:
        if mention.sentiment_score is None or pane.has_score(mention.message_id):
            return _NOTHING
        pane.add_score(mention.message_id, mention.sentiment_score)
    else:
        raise ValueError(f"not a data mention: {mention.kind}")
    if first_in_pane:
        _mark_pending(state, t, cfg)
    return _COUNTED


def _already_in(pane: Pane | None, mention: Mention) -> bool:
    if pane is None:
        return False
    if mention.kind is MentionKind.SCORE:
        return pane.has_score(mention.message_id)
    return pane.counts(mention.message_id) or mention.message_id in pane.retracted


def _retract(state: SymbolState, mention: Mention, watermark_ms: int, cfg: WindowConfig) -> Applied:
    t = mention.created_at_ms
    pane_start = window_start_ms(t, cfg.pane_ms)
    if pane_start + cfg.retain_ms <= watermark_ms:
        # its windows are past the revision horizon: report it, never correct silently
        return Applied(late=True, lateness_ms=watermark_ms - t)
    pane = state.panes.get(pane_start)
    if pane is None:
        pane = state.panes[pane_start] = Pane()
    if mention.message_id in pane.retracted:
        return _NOTHING  # a second destroy
    if not pane.retract(mention.message_id):
        return _NOTHING  # never counted here (late, duplicate retraction, before our time)
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
    memo: dict[tuple[int, ...], Any] = {}  # (the panes do not change while these close)
    for _, _, spec, start in due:
        result = window_result(state, symbol, spec, start, 0, cfg.pane_ms, memo)
        state.emitted.setdefault(spec.key, {})[start] = 0
        verdict = None
        # a window left without messages (destroys, /sentiment scores only) is a gap to the
        # detectors, as it is in the evaluation (bench/evaluate.py), which sees messages only
        if rule is not None and result.message_count and spec in scored:
            verdict = detectors.observe(
                state.detectors,
                start,
                spec.size_ms,
                result.message_count,
                result.distinct_users,
                rule,
            )
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

"""Pure: one symbol partition's symbols, watermark and closes.

:class:`PartitionEngine` is what the signals stage drives, one per assigned symbol partition;
it is plain Python so unit tests and the benchmark run it without Kafka. Each input is a
mention batch (:class:`Batch`): its mentions are applied against the watermark as it stood,
then the batch's progress marks move the watermark (:class:`~processors.progress.Watermark`)
and every window it passed closes, for every symbol of the partition. The engine returns the
records to publish; :meth:`PartitionEngine.persist` returns the table rows that changed.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pulse.processors import detectors
from pulse.processors.mentions import ANY_SYMBOL, Mention, MentionKind
from pulse.processors.progress import ReadProgress, Watermark
from pulse.processors.windows import (
    Closed,
    SymbolState,
    WindowConfig,
    WindowResult,
    WindowSpec,
    add_mention,
    close_windows,
    pane_key,
    spike_record,
    states_from_rows,
    window_result,
    window_start_ms,
)

PARTITION_ROW = "\x00partition"  # table key prefix of a partition's own row (never a symbol)


def json_row(value: dict[str, Any]) -> bytes:
    """A JSON table row. (orjson's result keeps a 4 KB allocation whatever its length; the
    row is copied into a bytes object of its own size, as rows are kept in memory.)"""
    return bytes(memoryview(orjson.dumps(value)))


def partition_row_key(partition: int) -> str:
    return f"{PARTITION_ROW}{partition}"


def partition_of_row_key(key: str) -> int | None:
    """The partition of a :func:`partition_row_key`; None for symbol and pane rows."""
    return int(key[len(PARTITION_ROW) :]) if key.startswith(PARTITION_ROW) else None


@dataclass(frozen=True)
class Batch:
    """One mention batch record: mentions, then how far each raw partition had been read."""

    mentions: list[Mention]
    progress: list[ReadProgress]
    raw_partitions: int


@dataclass
class Outputs:
    """Records produced by one input record, in emission order."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    sentiments: list[dict[str, Any]] = field(default_factory=list)
    spikes: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    closed_windows: int = 0
    corrections: int = 0
    idle_close: bool = False
    late_kinds: list[str] = field(default_factory=list)

    # when set, each window's (volume, sentiment) records go here at once instead of into the
    # lists: an idle close or a backfill batch can close hundreds of thousands of windows, and
    # holding them all as dicts until the batch ends costs hundreds of MB
    on_result: Callable[[dict[str, Any], dict[str, Any]], None] | None = None

    def add_result(
        self, result: WindowResult, emitted_at_ms: int, warm: bool | None = None
    ) -> None:
        volume = result.volume_record(emitted_at_ms)
        sentiment = result.sentiment_record(emitted_at_ms, warm)
        if self.on_result is not None:
            self.on_result(volume, sentiment)
        else:
            self.volumes.append(volume)
            self.sentiments.append(sentiment)


class PartitionEngine:
    """Symbols of one symbol partition: apply batches, advance the watermark, close."""

    def __init__(
        self,
        cfg: WindowConfig,
        states: dict[str, SymbolState] | None = None,
        partition_row: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.states: dict[str, SymbolState] = states or {}
        row = partition_row or {}
        self.clock = Watermark.from_json(cfg.grace_ms, row.get("watermark"))
        # destroys without a body whose message was not (yet) counted here: id → event time
        self.orphans: dict[int, int] = {int(k): v for k, v in row.get("orphans", {}).items()}
        self.last_offset: int = row.get("last_offset", -1)  # last batch that moved the clock
        self._clock_dirty = False
        # what changed since the last `persist()`: symbols, and which of their panes
        self._dirty: dict[str, set[int]] = {}
        self._dirty_meta: set[str] = set()  # symbols whose meta row changed
        self._persisted_chunks = {
            s: {start: p.chunks for start, p in st.panes.items()} for s, st in self.states.items()
        }
        self._due: list[tuple[int, str]] = []  # (earliest pending end, symbol), may be stale
        for symbol, state in self.states.items():
            self._schedule(symbol, state)
        # After a crash the rows can be ahead of the committed input: batches up to
        # `replay_upto` already changed them, but what they emitted may be lost. Such
        # batches only re-emit the windows (and spikes) they closed.
        self.replay_upto = max(
            [st.last_offset for st in self.states.values()] + [self.last_offset], default=-1
        )
        self._replay: dict[int, list[tuple[int, int, int, str, WindowSpec]]] = {}
        for symbol, state in self.states.items():
            for spec in cfg.specs:
                for start, offset in state.emitted_by.get(spec.key, {}).items():
                    if state.emitted.get(spec.key, {}).get(start) is not None:
                        entry = (start + spec.size_ms, spec.size_ms, start, symbol, spec)
                        self._replay.setdefault(offset, []).append(entry)

    @classmethod
    def from_rows(cls, cfg: WindowConfig, rows: Any) -> PartitionEngine:
        """Rebuild from the partition's ``(key, row)`` table rows (see :meth:`persist`)."""
        rows = list(rows)
        partition_row = next(
            (row for key, row in rows if partition_of_row_key(key) is not None), None
        )
        if isinstance(partition_row, (bytes, str)):
            partition_row = json.loads(partition_row)
        symbol_rows = [(k, r) for k, r in rows if partition_of_row_key(k) is None]
        return cls(cfg, states_from_rows(symbol_rows, cfg), partition_row)

    @property
    def watermark_ms(self) -> int:
        return self.clock.watermark_ms

    # --- persistence ----------------------------------------------------------------------

    def persist(self, partition: int) -> list[tuple[str, bytes | None]]:
        """Table writes for what changed since the last call, as ``(key, value or None)``.

        Per changed pane one new chunk row (only what it gained, binary: see
        :meth:`~processors.windows.Pane.take_chunk`; a symbol's last one carries its last
        offset); the symbol's meta row (JSON) only when its marks changed (a close, a
        correction);
        and the partition's own row (watermark, orphan destroys). Chunks first: a crash
        between them leaves the meta row behind, which
        :func:`~processors.windows.states_from_rows` repairs and a replay re-applies.
        """
        writes: list[tuple[str, bytes | None]] = []
        metas: list[tuple[str, bytes | None]] = []
        for symbol, panes in self._dirty.items():
            state = self.states[symbol]
            persisted = self._persisted_chunks.setdefault(symbol, {})
            for start in [s for s in persisted if s not in state.panes]:
                writes.extend((pane_key(symbol, start, n), None) for n in range(persisted[start]))
                del persisted[start]
            dirty = [(s, p) for s in sorted(panes) if (p := state.panes.get(s)) and p.dirty()]
            for n, (start, pane) in enumerate(dirty, 1):
                # the symbol's offset rides on its last chunk only: a crash that lands some of
                # the symbol's chunks and not all must not mark the batch as applied to it
                offset = state.last_offset if n == len(dirty) else -1
                writes.append((pane_key(symbol, start, pane.chunks), pane.take_chunk(offset)))
                persisted[start] = pane.chunks
        for symbol in sorted(self._dirty_meta):
            metas.append((symbol, json_row(self.states[symbol].meta_json())))
        self._dirty.clear()
        self._dirty_meta.clear()
        if self._clock_dirty:
            metas.append((partition_row_key(partition), json_row(self.partition_json())))
            self._clock_dirty = False
        return writes + metas

    def partition_json(self) -> dict[str, Any]:
        return {
            "watermark": self.clock.to_json(),
            "orphans": {str(k): v for k, v in self.orphans.items()},
            "last_offset": self.last_offset,
        }

    def _touch(self, symbol: str, pane_start: int | None = None, meta: bool = False) -> None:
        panes = self._dirty.get(symbol)
        if panes is None:
            panes = self._dirty[symbol] = set()
        if pane_start is not None:
            panes.add(pane_start)
        if meta:
            self._dirty_meta.add(symbol)

    # --- input ------------------------------------------------------------------------------

    def has_open(self) -> bool:
        """Some window of this partition is still waiting for its close."""
        return any(st.earliest_end_ms(self.cfg.specs) is not None for st in self.states.values())

    def on_batch(
        self,
        batch: Batch,
        trigger_ms: int,
        now_ms: int,
        offset: int = -1,
        out: Outputs | None = None,
    ) -> Outputs:
        """Apply a batch's mentions, then its progress marks; close what became final.

        :param trigger_ms: Kafka timestamp of the batch record; becomes ``emitted_at_ms`` of
            what it closes, so a replay after a crash rebuilds identical records.
        :param now_ms: wall-clock time, only for ``LateMention.detected_at_ms``.
        :param offset: the batch record's offset (-1: not from a log), to tell a replay.
        """
        replaying = 0 <= offset <= self.replay_upto
        out = out if out is not None else Outputs()
        if replaying:
            self._replayed(offset, trigger_ms, out)
        for mention in batch.mentions:
            if mention.kind is MentionKind.RETRACTION and mention.symbol == ANY_SYMBOL:
                for resolved in self._resolve(mention):
                    self._apply(resolved, out, trigger_ms, now_ms, offset, replaying)
            else:
                self._apply(mention, out, trigger_ms, now_ms, offset, replaying)
        if not replaying or offset > self.last_offset:
            self._advance(batch, out, trigger_ms, offset)
        self._stamp(out, offset)
        return out

    def _advance(self, batch: Batch, out: Outputs, trigger_ms: int, offset: int) -> None:
        moved = self.clock.observe(batch.progress, batch.raw_partitions)
        self.last_offset = max(self.last_offset, offset)
        self._clock_dirty = True
        if moved:
            self._close_due(trigger_ms, out, offset)
            self._forget_orphans()
        if self.clock.all_quiet() and self.has_open():
            self._idle_close(trigger_ms, out, offset)

    def _apply(
        self,
        mention: Mention,
        out: Outputs,
        trigger_ms: int,
        now_ms: int,
        offset: int,
        replaying: bool,
    ) -> None:
        symbol = mention.symbol
        state = self.states.get(symbol)
        if replaying and state is not None and offset <= state.last_offset:
            return  # this batch already changed this symbol's rows before the crash
        # (else: its rows were not written up to here; pane ids make a repeat harmless)
        if mention.kind is MentionKind.MESSAGE and mention.message_id in self.orphans:
            return  # destroyed before it arrived
        if state is None:
            state = self.states[symbol] = SymbolState()
        before = state.earliest_end_ms(self.cfg.specs)
        applied = add_mention(state, mention, self.clock.watermark_ms, self.cfg)
        pane_start = window_start_ms(mention.created_at_ms, self.cfg.pane_ms)
        if pane_start in state.panes:  # a retraction marks its pane even when not counted
            self._touch(symbol, pane_start)
        if applied.late:
            out.late.append(
                {
                    "mention": mention.to_avro(),
                    "watermark_ms": self.clock.watermark_ms,
                    "lateness_ms": applied.lateness_ms,
                    "detected_at_ms": now_ms,
                }
            )
            out.late_kinds.append(mention.kind.value)
        if applied.counted:
            out.changed.add(symbol)
        if applied.corrections:
            self._touch(symbol, meta=True)
        for correction in applied.corrections:
            out.add_result(correction, trigger_ms, self._warm(state))
            out.corrections += 1
            state.emitted_by.setdefault(correction.spec.key, {})[correction.start_ms] = offset
        if state.earliest_end_ms(self.cfg.specs) != before:
            self._schedule(symbol, state)

    def _resolve(self, retraction: Mention) -> list[Mention]:
        """A destroy without body: a retraction for every symbol whose panes counted it."""
        found = [
            Mention(MentionKind.RETRACTION, symbol, retraction.message_id, start)
            for symbol, state in self.states.items()
            for start, pane in state.panes.items()
            if pane.counts(retraction.message_id)
        ]
        if not found:  # not counted (yet): a create arriving later must not count
            self.orphans[retraction.message_id] = retraction.created_at_ms
            self._clock_dirty = True
        return found

    def _forget_orphans(self) -> None:
        horizon = self.clock.watermark_ms - self.cfg.retain_ms
        for message_id in [i for i, t in self.orphans.items() if t < horizon]:
            del self.orphans[message_id]

    def _stamp(self, out: Outputs, offset: int) -> None:
        for symbol in out.changed:
            self.states[symbol].last_offset = max(self.states[symbol].last_offset, offset)
            self._touch(symbol)

    # --- closes -----------------------------------------------------------------------------

    def _schedule(self, symbol: str, state: SymbolState) -> None:
        end = state.earliest_end_ms(self.cfg.specs)
        if end is not None:
            heapq.heappush(self._due, (end, symbol))

    def _idle_close(self, trigger_ms: int, out: Outputs, offset: int) -> None:
        """Every raw partition went quiet: close every open window that is over by the batch
        record's clock (end + grace at or before ``trigger_ms``, the fan-out's wall clock).

        History (a replay, a backfill) is over: all of it closes at once. A live stream's
        windows still running stay open, so its data after a quiet spell counts instead of
        being late; the fan-out repeats its quiet marks while the stream stays quiet, and
        they close as the clock passes them.
        """
        ends = [
            start + spec.size_ms
            for state in self.states.values()
            for spec in self.cfg.specs
            for start in state.pending.get(spec.key, ())
        ]
        target = min(max(ends), trigger_ms - self.cfg.grace_ms) if ends else None
        if target is not None and target > self.clock.watermark_ms:
            self.clock.force(target)
            closed = out.closed_windows
            self._close_due(trigger_ms, out, offset)
            out.idle_close = out.closed_windows > closed

    def _close_due(self, trigger_ms: int, out: Outputs, offset: int) -> None:
        wm = self.clock.watermark_ms
        while self._due and self._due[0][0] <= wm:
            end, symbol = heapq.heappop(self._due)
            state = self.states[symbol]
            if state.earliest_end_ms(self.cfg.specs) != end:
                continue  # stale entry; the live one is elsewhere in the heap
            for closed in close_windows(state, symbol, wm, self.cfg):
                self._emit(state, closed, trigger_ms, out, offset)
            out.changed.add(symbol)
            self._touch(symbol, meta=True)
            self._schedule(symbol, state)

    def _emit(
        self, state: SymbolState, closed: Closed, trigger_ms: int, out: Outputs, offset: int
    ) -> None:
        result = closed.result
        out.add_result(result, trigger_ms, closed.warm)
        out.closed_windows += 1
        # replay marks only for windows whose emitted mark is kept (a batch of a fast replay
        # closes months of windows at once, most of them already past the revision horizon)
        kept = result.start_ms in state.emitted.get(result.spec.key, {})
        if kept:
            state.emitted_by.setdefault(result.spec.key, {})[result.start_ms] = offset
        if closed.verdict is not None:  # the detectors return a verdict only for an alert
            spike = spike_record(result, closed.verdict, trigger_ms)
            out.spikes.append(spike)
            if kept:
                state.spikes_sent.setdefault(result.spec.key, {})[result.start_ms] = spike

    def _warm(self, state: SymbolState) -> bool | None:
        """Whether the symbol's detectors may alert (None: no detectors configured)."""
        rule = self.cfg.rule
        return None if rule is None else detectors.is_warm(state.detectors, rule)

    def _replayed(self, offset: int, trigger_ms: int, out: Outputs) -> None:
        for _, _, start, symbol, spec in sorted(self._replay.pop(offset, []), key=lambda e: e[:4]):
            state = self.states[symbol]
            revision = state.emitted[spec.key][start]
            result = window_result(state, symbol, spec, start, revision, self.cfg.pane_ms)
            # warmth as it is now (it may have turned warm since the first emission)
            out.add_result(result, trigger_ms, self._warm(state))
            spike = state.spikes_sent.get(spec.key, {}).get(start)
            if spike is not None and revision == 0:
                out.spikes.append(spike)

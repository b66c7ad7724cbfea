"""Stage 2, pure: one mentions partition's symbols, watermark and closes.

:class:`PartitionEngine` is what the faust agent drives, one per assigned partition; it is
plain Python so unit tests and the benchmark run it without Kafka. It returns the records to
publish and the symbols whose table rows changed; the agent does the I/O.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from processors.mentions import Mention, MentionKind
from processors.windows import (
    Closed,
    PartitionClock,
    SymbolState,
    WindowConfig,
    WindowResult,
    WindowSpec,
    add_mention,
    close_windows,
    pane_key,
    recovered_watermark,
    spike_record,
    states_from_rows,
    window_result,
    window_start_ms,
)


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
    late_kinds: list[str] = field(default_factory=list)

    def add_result(self, result: WindowResult, emitted_at_ms: int) -> None:
        self.volumes.append(result.volume_record(emitted_at_ms))
        self.sentiments.append(result.sentiment_record(emitted_at_ms))


class PartitionEngine:
    """Symbols of one stage-2 partition: apply mentions, advance the watermark, close."""

    def __init__(self, cfg: WindowConfig, states: dict[str, SymbolState] | None = None) -> None:
        self.cfg = cfg
        self.states: dict[str, SymbolState] = states or {}
        # what changed since the last `persist()`: symbols, and which of their panes
        self._dirty: dict[str, set[int]] = {}
        self._persisted_panes = {s: set(st.panes) for s, st in self.states.items()}
        self.clock = PartitionClock(
            cfg.grace_ms, recovered_watermark(list(self.states.values()), cfg.grace_ms)
        )
        self._due: list[tuple[int, str]] = []  # (earliest pending end, symbol), may be stale
        for symbol, state in self.states.items():
            self._schedule(symbol, state)
        # After a crash the rows can be ahead of the committed input: records up to
        # `replay_upto` already changed them, but what they emitted may be lost. Such
        # records only re-emit the windows (and spikes) they closed.
        self.replay_upto = max((st.last_offset for st in self.states.values()), default=-1)
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
        return cls(cfg, states_from_rows(rows, cfg))

    def persist(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Table writes for what changed since the last call, as ``(key, row or None)``.

        One meta row per changed symbol and one row per changed pane (deleted panes as
        None), panes first: a crash between the two leaves the meta row behind, which
        :func:`~processors.windows.states_from_rows` repairs and a replay re-applies.
        """
        writes: list[tuple[str, dict[str, Any] | None]] = []
        metas: list[tuple[str, dict[str, Any] | None]] = []
        for symbol, panes in self._dirty.items():
            state = self.states[symbol]
            persisted = self._persisted_panes.setdefault(symbol, set())
            for start in persisted - state.panes.keys():
                writes.append((pane_key(symbol, start), None))
                persisted.discard(start)
            for start in panes:
                pane = state.panes.get(start)
                if pane is not None:
                    writes.append((pane_key(symbol, start), pane.to_json()))
                    persisted.add(start)
            metas.append((symbol, state.meta_json()))
        self._dirty.clear()
        return writes + metas

    def _touch(self, symbol: str, pane_start: int | None = None) -> None:
        panes = self._dirty.setdefault(symbol, set())
        if pane_start is not None:
            panes.add(pane_start)

    @property
    def watermark_ms(self) -> int:
        return self.clock.watermark_ms

    def has_open(self) -> bool:
        """Some window of this partition is still waiting for its close."""
        return any(st.earliest_end_ms(self.cfg.specs) is not None for st in self.states.values())

    def _schedule(self, symbol: str, state: SymbolState) -> None:
        end = state.earliest_end_ms(self.cfg.specs)
        if end is not None:
            heapq.heappush(self._due, (end, symbol))

    def _replayed(self, offset: int, trigger_ms: int) -> Outputs:
        out = Outputs()
        for _, _, start, symbol, spec in sorted(self._replay.pop(offset, []),
                                                key=lambda e: e[:4]):
            state = self.states[symbol]
            revision = state.emitted[spec.key][start]
            result = window_result(state, symbol, spec, start, revision, self.cfg.pane_ms)
            out.add_result(result, trigger_ms)
            spike = state.spikes_sent.get(spec.key, {}).get(start)
            if spike is not None and revision == 0:
                out.spikes.append(spike)
        return out

    def on_mention(
        self, mention: Mention, trigger_ms: int, now_ms: int, offset: int = -1
    ) -> Outputs:
        """Apply one data mention, then close whatever the new watermark made final.

        :param trigger_ms: Kafka timestamp of the mention; becomes ``emitted_at_ms`` of what
            it closes, so a replay after a crash rebuilds identical records.
        :param now_ms: wall-clock time, only for ``LateMention.detected_at_ms``.
        """
        if mention.kind is MentionKind.TICK:
            raise ValueError("ticks go to on_idle_tick")
        symbol = mention.symbol
        state = self.states.get(symbol)
        if 0 <= offset <= self.replay_upto:
            out = self._replayed(offset, trigger_ms)
            if state is not None and offset <= state.last_offset:
                return out
            # this symbol's rows were not written up to here (a crash between rows of one
            # batch): apply the mention for real; pane ids make a repeat harmless
        else:
            out = Outputs()
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
        for correction in applied.corrections:
            out.add_result(correction, trigger_ms)
            out.corrections += 1
            state.emitted_by.setdefault(correction.spec.key, {})[correction.start_ms] = offset
        if state.earliest_end_ms(self.cfg.specs) != before:
            self._schedule(symbol, state)
        if self.clock.observe(mention.created_at_ms):
            self._close_due(trigger_ms, out, offset)
        self._stamp(out, offset)
        return out

    def _stamp(self, out: Outputs, offset: int) -> None:
        for symbol in out.changed:
            self.states[symbol].last_offset = max(self.states[symbol].last_offset, offset)
            self._touch(symbol)

    def on_idle_tick(self, trigger_ms: int, offset: int = -1) -> Outputs:
        """Input went quiet: close every open window of the partition now."""
        if 0 <= offset <= self.replay_upto:
            return self._replayed(offset, trigger_ms)
        out = Outputs()
        ends = [
            start + spec.size_ms
            for state in self.states.values()
            for spec in self.cfg.specs
            for start in state.pending.get(spec.key, ())
        ]
        if ends:
            self.clock.force(max(ends))
            self._close_due(trigger_ms, out, offset)
        self._stamp(out, offset)
        return out

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
            self._schedule(symbol, state)

    def _emit(
        self, state: SymbolState, closed: Closed, trigger_ms: int, out: Outputs, offset: int
    ) -> None:
        result = closed.result
        out.add_result(result, trigger_ms)
        out.closed_windows += 1
        state.emitted_by.setdefault(result.spec.key, {})[result.start_ms] = offset
        if closed.verdict is not None and closed.verdict.fired:
            spike = spike_record(result, closed.verdict, trigger_ms)
            out.spikes.append(spike)
            state.spikes_sent.setdefault(result.spec.key, {})[result.start_ms] = spike

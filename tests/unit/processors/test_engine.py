from __future__ import annotations

import json
import random

import pytest

from processors.engine import PartitionEngine
from processors.mentions import Mention, MentionKind
from processors.windows import SymbolState, WindowConfig, WindowSpec

M = 60_000
CFG = WindowConfig(specs=(WindowSpec(M, M),), grace_ms=5_000, revision_horizon_ms=M)


def mention(message_id: int, t: int, symbol: str = "AAPL") -> Mention:
    return Mention(MentionKind.MESSAGE, symbol, message_id, t, message_id, None)


def test_watermark_of_one_symbol_closes_windows_of_the_others() -> None:
    engine = PartitionEngine(CFG)
    engine.on_mention(mention(1, 1_000, "AAPL"), trigger_ms=11, now_ms=0)
    engine.on_mention(mention(2, 2_000, "TSLA"), trigger_ms=12, now_ms=0)
    out = engine.on_mention(mention(3, M + 5_000, "NVDA"), trigger_ms=13, now_ms=0)
    assert sorted((v["symbol"], v["message_count"]) for v in out.volumes) == [
        ("AAPL", 1), ("TSLA", 1)]
    assert {v["emitted_at_ms"] for v in out.volumes} == {13}
    assert out.changed == {"AAPL", "TSLA", "NVDA"}


def test_idle_tick_closes_everything_open_and_later_data_is_late() -> None:
    engine = PartitionEngine(CFG)
    engine.on_mention(mention(1, 1_000), 1, 0)
    engine.on_mention(mention(2, M + 1_000), 2, 0)
    assert engine.has_open()
    out = engine.on_idle_tick(trigger_ms=99)
    assert [v["window_start_ms"] for v in out.volumes] == [0, M]
    assert not engine.has_open()
    late = engine.on_mention(mention(3, M + 2_000), 100, 7)
    assert late.late[0]["lateness_ms"] == 2 * M - (M + 2_000)
    assert late.late[0]["detected_at_ms"] == 7
    assert engine.on_idle_tick(101).volumes == []


def test_engine_rebuilt_from_table_rows_continues_identically() -> None:
    live = PartitionEngine(CFG)
    for i, t in enumerate([1_000, 30_000, M + 1_000, M + 2_000]):
        live.on_mention(mention(i, t, "AAPL" if i % 2 else "TSLA"), i, 0)
    rows = {s: json.loads(json.dumps(st.to_json())) for s, st in live.states.items()}
    restored = PartitionEngine(CFG, {s: SymbolState.from_json(r) for s, r in rows.items()})
    assert restored.watermark_ms == live.watermark_ms
    a = live.on_mention(mention(9, 3 * M, "AAPL"), 50, 0)
    b = restored.on_mention(mention(9, 3 * M, "AAPL"), 50, 0)
    assert a.volumes == b.volumes and a.volumes


def test_correction_goes_out_with_the_retraction() -> None:
    engine = PartitionEngine(CFG)
    engine.on_mention(mention(1, 1_000), 1, 0)
    engine.on_mention(mention(2, 2_000), 2, 0)
    engine.on_mention(mention(3, M + 6_000), 3, 0)  # closes window 0
    retraction = Mention(MentionKind.RETRACTION, "AAPL", 1, 1_000, 1, None)
    out = engine.on_mention(retraction, 4, 0)
    assert [(v["window_start_ms"], v["message_count"], v["revision"]) for v in out.volumes] == [
        (0, 1, 1)]
    assert out.corrections == 1


def test_replay_after_crash_re_emits_identical_records() -> None:
    """Rows persisted up to offset 14, offsets committed up to 5: a restart replays 5..19."""
    # marks are kept for the revision horizon, which must outlast the uncommitted input
    cfg = WindowConfig(specs=(WindowSpec(M, M), WindowSpec(2 * M, M)), grace_ms=5_000,
                       revision_horizon_ms=10 * M)
    inputs = [mention(i, i * 20_000, "AAPL" if i % 3 else "TSLA") for i in range(20)]
    live = PartitionEngine(cfg)
    outputs: dict[int, list[dict[str, object]]] = {}
    rows: dict[str, dict[str, object]] = {}
    for offset, m in enumerate(inputs):
        out = live.on_mention(m, 1_000 + offset, 0, offset)
        outputs[offset] = out.volumes
        if offset == 14:
            rows = {s: json.loads(json.dumps(st.to_json())) for s, st in live.states.items()}
    restarted = PartitionEngine(cfg, {s: SymbolState.from_json(r) for s, r in rows.items()})
    assert restarted.replay_upto == 14
    replayed = {
        offset: restarted.on_mention(inputs[offset], 1_000 + offset, 0, offset).volumes
        for offset in range(5, 20)
    }
    def by_window(records: list[dict[str, object]]) -> list[dict[str, object]]:
        return sorted(records, key=lambda r: (r["symbol"], r["window_size_ms"],
                                              r["window_start_ms"]))  # type: ignore[return-value]

    assert {o: by_window(v) for o, v in replayed.items()} == {
        o: by_window(outputs[o]) for o in range(5, 20)}
    assert any(replayed[o] for o in range(5, 15))  # the replayed part did emit windows


def _apply(table: dict[str, object], writes: list[tuple[str, object]]) -> None:
    for key, row in writes:
        if row is None:
            table.pop(key, None)
        else:
            table[key] = json.loads(json.dumps(row))


def test_rows_written_per_batch_rebuild_the_same_engine() -> None:
    """Meta + pane rows, written once per batch, restore what the live engine holds,
    including panes deleted past the revision horizon."""
    live = PartitionEngine(CFG)
    table: dict[str, object] = {}
    writes_per_batch = []
    inputs = [mention(i, i * 7_000, "AAPL" if i % 3 else "TSLA") for i in range(60)]
    for offset, m in enumerate(inputs):
        live.on_mention(m, offset, 0, offset)
        if offset % 10 == 9:  # a batch ends
            writes = live.persist()
            writes_per_batch.append(len(writes))
            _apply(table, writes)
    assert live.persist() == []  # nothing changed since
    restored = PartitionEngine.from_rows(CFG, table.items())
    assert restored.states == live.states
    # the horizon of one minute dropped old panes: their rows were deleted, not left behind
    pane_rows = [k for k in table if "\t" in k]
    assert len(pane_rows) == sum(len(s.panes) for s in live.states.values())
    # a batch (70 s) writes only the panes it touched or dropped, plus one meta row per
    # symbol: never a symbol's whole history
    assert max(writes_per_batch) <= 2 * (2 + 2 + 1)


def test_crash_between_pane_and_meta_rows_loses_nothing() -> None:
    """A batch's pane rows were written, its meta rows not: the restart re-marks the open
    windows and re-applies the batch's mentions, and the counts come out whole."""
    inputs = [mention(i, i * 4_000, "AAPL") for i in range(30)]  # 2 min of AAPL
    uninterrupted = PartitionEngine(CFG)
    expected = {o: [(v["window_start_ms"], v["message_count"])
                    for v in uninterrupted.on_mention(m, 1_000 + o, 0, o).volumes]
                for o, m in enumerate(inputs)}
    live = PartitionEngine(CFG)
    table: dict[str, object] = {}
    for offset, m in enumerate(inputs[:20]):
        live.on_mention(m, 1_000 + offset, 0, offset)
        if offset == 9:
            _apply(table, live.persist())
    panes_only = [(k, r) for k, r in live.persist() if "\t" in k]  # crash before the meta
    _apply(table, panes_only)
    restarted = PartitionEngine.from_rows(CFG, table.items())
    replayed = {o: [(v["window_start_ms"], v["message_count"])  # committed up to offset 9
                    for v in restarted.on_mention(inputs[o], 1_000 + o, 0, o).volumes]
                for o in range(10, 30)}
    assert replayed == {o: expected[o] for o in range(10, 30)}
    assert (0, 15) in replayed[17]  # the first minute, whole, closed in the replayed part


def _counts(outputs: list[object]) -> dict[tuple[str, int], int]:
    """Last emitted count per (symbol, window start): what an upserting reader ends with."""
    got: dict[tuple[str, int], int] = {}
    for out in outputs:
        for v in out.volumes:  # type: ignore[attr-defined]
            got[(v["symbol"], v["window_start_ms"])] = v["message_count"]
    return got


@pytest.mark.parametrize("seed", range(100))
def test_crash_anywhere_then_replay_from_an_older_commit_loses_nothing(seed: int) -> None:
    """A worker persists rows per batch and dies inside one (a random prefix of that batch's
    row writes lands); the next one rebuilds from the rows and replays from a commit at or
    before the last whole batch. Every window ends with the uninterrupted run's count."""
    rng = random.Random(seed)
    cfg = WindowConfig(specs=(WindowSpec(M, M),), grace_ms=30 * M, revision_horizon_ms=60 * M)
    symbols = [f"R{i}" for i in range(6)]
    inputs = [Mention(MentionKind.MESSAGE, rng.choice(symbols), i + 1,
                      i * 150 + rng.randrange(0, 40_000), i % 50, None) for i in range(1_200)]
    inputs += [Mention(MentionKind.MESSAGE, s, 10_000 + k, 200 * M, 1, None)
               for k, s in enumerate(symbols)]  # pushes the watermark past everything
    reference = PartitionEngine(cfg)
    expected = _counts([reference.on_mention(m, o, 0, o) for o, m in enumerate(inputs)])

    first = PartitionEngine(cfg)
    table: dict[str, object] = {}
    outputs, offset, acked = [], 0, 0
    crash_at = rng.randrange(100, 1_100)
    while True:
        end = min(offset + rng.randrange(1, 200), crash_at)
        outputs += [first.on_mention(inputs[o], o, 0, o) for o in range(offset, end)]
        writes = first.persist()
        if end == crash_at:
            _apply(table, writes[: rng.randrange(0, len(writes) + 1)])
            break
        _apply(table, writes)
        acked = offset = end
    second = PartitionEngine.from_rows(cfg, table.items())
    committed = rng.randrange(0, acked + 1)  # commits trail acks
    outputs += [second.on_mention(inputs[o], o, 0, o) for o in range(committed, len(inputs))]
    assert _counts(outputs) == expected

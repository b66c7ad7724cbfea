from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest

from pulse.processors import detectors
from pulse.processors.engine import Batch, Outputs, PartitionEngine
from pulse.processors.mentions import ANY_SYMBOL, Mention, MentionKind
from pulse.processors.progress import ReadProgress
from pulse.processors.windows import SymbolState, WindowConfig, WindowSpec, chunk_json

M = 60_000
CFG = WindowConfig(specs=(WindowSpec(M, M),), grace_ms=5_000, revision_horizon_ms=M)


def mention(message_id: int, t: int, symbol: str = "AAPL") -> Mention:
    return Mention(MentionKind.MESSAGE, symbol, message_id, t, message_id, None)


def mark(
    event_ms: int, partition: int = 0, idle: bool = False, quiet: bool = False
) -> ReadProgress:
    return ReadProgress("raw", partition, 0, event_ms, idle, quiet)


def feed(
    engine: PartitionEngine, m: Mention, trigger_ms: int, now_ms: int, offset: int = -1
) -> Outputs:
    """One mention as a batch from a single raw partition read in event-time order (the
    mark is the highest event time read so far)."""
    seen = engine.clock.marks.get(("raw", 0))
    high = max(m.created_at_ms, seen.event_ms if seen else -1)
    return engine.on_batch(Batch([m], [mark(high)], 1), trigger_ms, now_ms, offset)


def test_watermark_of_one_symbol_closes_windows_of_the_others() -> None:
    engine = PartitionEngine(CFG)
    feed(engine, mention(1, 1_000, "AAPL"), trigger_ms=11, now_ms=0)
    feed(engine, mention(2, 2_000, "TSLA"), trigger_ms=12, now_ms=0)
    out = feed(engine, mention(3, M + 5_000, "NVDA"), trigger_ms=13, now_ms=0)
    assert sorted((v["symbol"], v["message_count"]) for v in out.volumes) == [
        ("AAPL", 1),
        ("TSLA", 1),
    ]
    assert {v["emitted_at_ms"] for v in out.volumes} == {13}
    assert out.changed == {"AAPL", "TSLA", "NVDA"}


def test_every_raw_partition_quiet_closes_all_of_a_history_and_later_data_is_late() -> None:
    engine = PartitionEngine(CFG)
    feed(engine, mention(1, 1_000), 1, 0)
    feed(engine, mention(2, M + 1_000), 2, 0)
    assert engine.has_open()
    now = 100 * M  # the batch records' clock: long after the replayed history
    idle = engine.on_batch(Batch([], [mark(M + 1_000, idle=True)], 1), now, 0)
    assert idle.volumes == [] and engine.has_open()  # idle alone does not close
    out = engine.on_batch(Batch([], [mark(M + 1_000, idle=True, quiet=True)], 1), now + 1, 0)
    assert [v["window_start_ms"] for v in out.volumes] == [0, M] and out.idle_close
    assert not engine.has_open()
    late = feed(engine, mention(3, M + 2_000), now + 2, 7)
    assert late.late[0]["lateness_ms"] == 2 * M - (M + 2_000)
    assert late.late[0]["detected_at_ms"] == 7


def test_a_quiet_live_stream_closes_only_windows_over_by_the_clock_and_data_after_it_counts() -> (
    None
):
    engine = PartitionEngine(CFG)
    feed(engine, mention(1, 1_000), 1_000, 0)
    feed(engine, mention(2, M + 1_000), M + 1_000, 0)
    quiet = [mark(M + 1_000, idle=True, quiet=True)]
    # quiet 10 s after the last message: the first minute is over (end + grace passed), the
    # second is still running and stays open
    out = engine.on_batch(Batch([], quiet, 1), M + 11_000, 0)
    assert [v["window_start_ms"] for v in out.volumes] == [0] and out.idle_close
    assert engine.has_open()
    # the stream goes on: its message in the running minute counts, nothing is late
    more = feed(engine, mention(3, M + 20_000), M + 20_000, 0)
    assert more.late == [] and more.volumes == []
    # quiet again, and the marks repeated as the clock passes the minute's end + grace
    assert engine.on_batch(Batch([], quiet, 1), M + 30_000, 0).volumes == []
    last = engine.on_batch(Batch([], quiet, 1), 2 * M + CFG.grace_ms, 0)
    assert [(v["window_start_ms"], v["message_count"]) for v in last.volumes] == [(M, 2)]
    assert not engine.has_open()


def test_watermark_waits_for_the_slowest_raw_partition_unless_it_is_idle() -> None:
    engine = PartitionEngine(CFG)
    ahead, behind = mark(10 * M, 0), mark(1_000, 1)
    engine.on_batch(Batch([mention(1, 1_000)], [ahead, behind], 2), 1, 0)
    out = engine.on_batch(Batch([mention(2, 9 * M)], [ahead, behind], 2), 2, 0)
    assert out.volumes == [] and engine.watermark_ms == 1_000 - CFG.grace_ms
    # partition 1 is read on to 2.5 min: minute 0 closes, minutes after it wait
    out = engine.on_batch(Batch([mention(3, 2 * M + 30_000)], [mark(150_000, 1)], 2), 3, 0)
    assert [v["window_start_ms"] for v in out.volumes] == [0, M] or [
        v["window_start_ms"] for v in out.volumes
    ] == [0]
    assert engine.watermark_ms == 150_000 - CFG.grace_ms
    # partition 1 caught up and idle: the newest event time read anywhere counts
    out = engine.on_batch(Batch([], [mark(150_000, 1, idle=True)], 2), 4, 0)
    assert engine.watermark_ms == 10 * M - CFG.grace_ms
    assert 2 * M in [v["window_start_ms"] for v in out.volumes]


def test_no_watermark_until_every_raw_partition_reported() -> None:
    engine = PartitionEngine(CFG)
    out = engine.on_batch(Batch([mention(1, 1_000)], [mark(10 * M, 0)], 2), 1, 0)
    assert out.volumes == [] and engine.has_open()
    out = engine.on_batch(Batch([], [mark(10 * M, 1)], 2), 2, 0)
    assert [v["window_start_ms"] for v in out.volumes] == [0]


def test_destroy_without_body_retracts_from_every_symbol_that_counted_it() -> None:
    engine = PartitionEngine(CFG)
    for symbol in ("AAPL", "TSLA"):
        feed(engine, mention(7, 1_000, symbol), 1, 0)
    feed(engine, mention(8, 2_000, "AAPL"), 2, 0)
    bodyless = Mention(MentionKind.RETRACTION, ANY_SYMBOL, 7, 3_000)  # destroyed at 3 s
    feed(engine, bodyless, 3, 0)
    out = feed(engine, mention(9, M + 6_000, "NVDA"), 4, 0)
    assert sorted((v["symbol"], v["message_count"]) for v in out.volumes) == [
        ("AAPL", 1),
        ("TSLA", 0),
    ]


def test_destroy_without_body_before_its_create_keeps_the_create_out() -> None:
    engine = PartitionEngine(CFG)
    feed(engine, Mention(MentionKind.RETRACTION, ANY_SYMBOL, 7, 1_000), 1, 0)
    feed(engine, mention(7, 1_000), 2, 0)
    feed(engine, mention(8, 2_000), 3, 0)
    out = feed(engine, mention(9, M + 6_000, "NVDA"), 4, 0)
    assert [(v["symbol"], v["message_count"]) for v in out.volumes] == [("AAPL", 1)]


def test_a_hot_pane_is_written_as_chunks_of_what_is_new() -> None:
    engine = PartitionEngine(CFG)
    sizes = []
    for batch in range(10):
        for i in range(100):
            feed(engine, mention(batch * 100 + i, 1_000 + i), batch, 0)
        chunks = [row for key, row in engine.persist(0) if key.count("\t") == 2]
        sizes.append([len(chunk_json(row)["m"]) for row in chunks])
    assert sizes == [[100]] * 10  # never the whole pane again


def test_engine_rebuilt_from_table_rows_continues_identically() -> None:
    live = PartitionEngine(CFG)
    table: dict[str, object] = {}
    for i, t in enumerate([1_000, 30_000, M + 1_000, M + 2_000]):
        feed(live, mention(i, t, "AAPL" if i % 2 else "TSLA"), i, 0, i)
    _apply(table, live.persist(0))
    restored = PartitionEngine.from_rows(CFG, table.items())
    assert restored.watermark_ms == live.watermark_ms
    a = feed(live, mention(9, 3 * M, "AAPL"), 50, 0, 9)
    b = feed(restored, mention(9, 3 * M, "AAPL"), 50, 0, 9)
    assert a.volumes == b.volumes and a.volumes


def test_correction_goes_out_with_the_retraction() -> None:
    engine = PartitionEngine(CFG)
    feed(engine, mention(1, 1_000), 1, 0)
    feed(engine, mention(2, 2_000), 2, 0)
    feed(engine, mention(3, M + 6_000), 3, 0)  # closes window 0
    retraction = Mention(MentionKind.RETRACTION, "AAPL", 1, 1_000, 1, None)
    out = feed(engine, retraction, 4, 0)
    assert [(v["window_start_ms"], v["message_count"], v["revision"]) for v in out.volumes] == [
        (0, 1, 1)
    ]
    assert out.corrections == 1


def test_replay_after_crash_re_emits_identical_records() -> None:
    """Rows persisted up to offset 14, offsets committed up to 5: a restart replays 5..19."""
    # marks are kept for the revision horizon, which must outlast the uncommitted input
    cfg = WindowConfig(
        specs=(WindowSpec(M, M), WindowSpec(2 * M, M)), grace_ms=5_000, revision_horizon_ms=10 * M
    )
    inputs = [mention(i, i * 20_000, "AAPL" if i % 3 else "TSLA") for i in range(20)]
    live = PartitionEngine(cfg)
    outputs: dict[int, list[dict[str, object]]] = {}
    rows: dict[str, dict[str, object]] = {}
    for offset, m in enumerate(inputs):
        out = feed(live, m, 1_000 + offset, 0, offset)
        outputs[offset] = out.volumes
        if offset == 14:
            rows = {s: json.loads(json.dumps(st.to_json())) for s, st in live.states.items()}
    restarted = PartitionEngine(cfg, {s: SymbolState.from_json(r) for s, r in rows.items()})
    assert restarted.replay_upto == 14
    replayed = {
        offset: feed(restarted, inputs[offset], 1_000 + offset, 0, offset).volumes
        for offset in range(5, 20)
    }

    def by_window(records: list[dict[str, object]]) -> list[dict[str, object]]:
        return sorted(
            records, key=lambda r: (r["symbol"], r["window_size_ms"], r["window_start_ms"])
        )  # type: ignore[return-value]

    assert {o: by_window(v) for o, v in replayed.items()} == {
        o: by_window(outputs[o]) for o in range(5, 20)
    }
    assert any(replayed[o] for o in range(5, 15))  # the replayed part did emit windows


def _apply(table: dict[str, object], writes: list[tuple[str, object]]) -> None:
    for key, row in writes:
        if row is None:
            table.pop(key, None)
        else:
            table[key] = bytes(row)  # what a table holds: the changelog value


def test_rows_written_per_batch_rebuild_the_same_engine() -> None:
    """Meta + pane rows, written once per batch, restore what the live engine holds,
    including panes deleted past the revision horizon."""
    live = PartitionEngine(CFG)
    table: dict[str, object] = {}
    writes_per_batch = []
    inputs = [mention(i, i * 7_000, "AAPL" if i % 3 else "TSLA") for i in range(60)]
    for offset, m in enumerate(inputs):
        feed(live, m, offset, 0, offset)
        if offset % 10 == 9:  # a batch ends
            writes = live.persist(0)
            writes_per_batch.append(len(writes))
            _apply(table, writes)
    assert live.persist(0) == []  # nothing changed since
    restored = PartitionEngine.from_rows(CFG, table.items())
    assert restored.states == live.states
    # the horizon of one minute dropped old panes: their rows were deleted, not left behind
    chunk_rows = [k for k in table if "\t" in k]
    assert len({k.rsplit("\t", 1)[0] for k in chunk_rows}) == sum(
        len(s.panes) for s in live.states.values()
    )
    assert len(chunk_rows) == sum(p.chunks for s in live.states.values() for p in s.panes.values())
    # a batch (70 s) writes, per symbol, a chunk of the (at most 2) panes it touched, the
    # tombstones of a dropped pane's chunks and its meta row, plus the partition's row:
    # never a symbol's whole history
    assert max(writes_per_batch) <= 2 * (2 + 2 + 1) + 1


def test_crash_between_pane_and_meta_rows_loses_nothing() -> None:
    """A batch's pane rows were written, its meta rows not: the restart re-marks the open
    windows and re-applies the batch's mentions, and the counts come out whole."""
    inputs = [mention(i, i * 4_000, "AAPL") for i in range(30)]  # 2 min of AAPL
    uninterrupted = PartitionEngine(CFG)
    expected = {
        o: [
            (v["window_start_ms"], v["message_count"])
            for v in feed(uninterrupted, m, 1_000 + o, 0, o).volumes
        ]
        for o, m in enumerate(inputs)
    }
    live = PartitionEngine(CFG)
    table: dict[str, object] = {}
    for offset, m in enumerate(inputs[:20]):
        feed(live, m, 1_000 + offset, 0, offset)
        if offset == 9:
            _apply(table, live.persist(0))
    panes_only = [(k, r) for k, r in live.persist(0) if "\t" in k]  # crash before the meta
    _apply(table, panes_only)
    restarted = PartitionEngine.from_rows(CFG, table.items())
    replayed = {
        o: [
            (v["window_start_ms"], v["message_count"])  # committed up to offset 9
            for v in feed(restarted, inputs[o], 1_000 + o, 0, o).volumes
        ]
        for o in range(10, 30)
    }
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
    inputs = [
        Mention(
            MentionKind.MESSAGE,
            rng.choice(symbols),
            i + 1,
            i * 150 + rng.randrange(0, 40_000),
            i % 50,
            None,
        )
        for i in range(1_200)
    ]
    inputs += [
        Mention(MentionKind.MESSAGE, s, 10_000 + k, 200 * M, 1, None) for k, s in enumerate(symbols)
    ]  # pushes the watermark past everything
    reference = PartitionEngine(cfg)
    expected = _counts([feed(reference, m, o, 0, o) for o, m in enumerate(inputs)])

    first = PartitionEngine(cfg)
    table: dict[str, object] = {}
    outputs, offset, acked = [], 0, 0
    crash_at = rng.randrange(100, 1_100)
    while True:
        end = min(offset + rng.randrange(1, 200), crash_at)
        outputs += [feed(first, inputs[o], o, 0, o) for o in range(offset, end)]
        writes = first.persist(0)
        if end == crash_at:
            _apply(table, writes[: rng.randrange(0, len(writes) + 1)])
            break
        _apply(table, writes)
        acked = offset = end
    second = PartitionEngine.from_rows(cfg, table.items())
    committed = rng.randrange(0, acked + 1)  # commits trail acks
    outputs += [feed(second, inputs[o], o, 0, o) for o in range(committed, len(inputs))]
    assert _counts(outputs) == expected


# --- the spike detectors, wired in (processors.detectors) -----------------------------------

FIVE, HOUR, DAY = 5 * M, 60 * M, 1_440 * M
T_DAY0 = 1_641_168_000_000  # 2022-01-03T00:00Z, a Monday
DETECTOR_CFG = WindowConfig(
    specs=(
        WindowSpec(M, M),
        WindowSpec(FIVE, FIVE),
        WindowSpec(HOUR, HOUR),
        WindowSpec(HOUR, FIVE),
    ),
    grace_ms=5_000,
    revision_horizon_ms=HOUR,
    rule=detectors.DetectorRule(),
)


def chatter(days: int = 8, seed: int = 3) -> list[Mention]:
    """A symbol's week: a daily rhythm of random users, then on the last day a one-account
    flood (80 messages in an hour: users are scored, it must not alert) and a burst of 60
    people in five minutes (it must)."""
    rng = random.Random(seed)
    out: list[tuple[int, int, str | None]] = []  # (time, user, label)
    for day in range(days):
        for hour in range(24):
            busy = 13 <= hour < 21 and day % 7 < 5  # market hours on weekdays (day 0: Mon)
            for _ in range(rng.randrange(6, 14) if busy else rng.randrange(0, 3)):
                t = T_DAY0 + day * DAY + hour * HOUR + rng.randrange(HOUR)
                out.append((t, rng.randrange(1, 400), rng.choice(("Bullish", "Bearish", None))))
    last = T_DAY0 + (days - 1) * DAY
    out += [(last + 3 * HOUR + i * 40_000, 7, "Bullish") for i in range(80)]
    out += [(last + 15 * HOUR + 20 * M + i * 4_000, 1_000 + i, "Bearish") for i in range(60)]
    out.sort()
    return [
        Mention(MentionKind.MESSAGE, "AAL", i + 1, t, u, label)
        for i, (t, u, label) in enumerate(out)
    ]


def run_batches(
    engine: PartitionEngine, mentions: list[Mention], size: int = 150, first_offset: int = 0
) -> list[Outputs]:
    """Mentions in batches of one raw partition read in time order, then a quiet mark
    (every open window closes, as at the end of a replay)."""
    outs = []
    for n, i in enumerate(range(0, len(mentions), size)):
        chunk = mentions[i : i + size]
        outs.append(
            engine.on_batch(
                Batch(chunk, [mark(chunk[-1].created_at_ms)], 1),
                chunk[-1].created_at_ms,
                0,
                first_offset + n,
            )
        )
    end = mentions[-1].created_at_ms
    outs.append(
        engine.on_batch(
            Batch([], [mark(end, idle=True, quiet=True)], 1), end, 0, first_offset + len(outs)
        )
    )
    return outs


def predicted(mentions: list[Mention], rule: detectors.DetectorRule) -> list[tuple[Any, ...]]:
    """What the pure detectors say for the same windows fed directly, in close order."""
    windows: dict[tuple[int, int], tuple[int, set[int]]] = {}
    for m in mentions:
        for size in (FIVE, HOUR):
            start = m.created_at_ms - m.created_at_ms % size
            count, users = windows.get((start, size), (0, set()))
            windows[(start, size)] = (count + 1, users | {m.user_id})  # type: ignore[arg-type]
    state, alerts = detectors.DetectorState(), []
    for (start, size), (count, users) in sorted(
        windows.items(), key=lambda w: (w[0][0] + w[0][1], w[0][1])
    ):
        v = detectors.observe(state, start, size, count, len(users), rule)
        if v is not None:
            alerts.append((start, size, *v.record_fields().values()))
    return alerts


def spikes_of(outs: list[Outputs]) -> list[tuple[Any, ...]]:
    fields = list(
        detectors.Detection(
            detectors.Kind.BURST,
            0,
            0,
            0,
            0,
            0,
            detectors.Severity.LOW,
            detectors.Scored.USERS,
            0,
            0,
            0,
        ).record_fields()
    )
    return [
        (s["window_start_ms"], s["window_size_ms"], *(s[f] for f in fields))
        for out in outs
        for s in out.spikes
    ]


def test_engine_alerts_are_what_the_pure_detectors_say_for_the_same_windows() -> None:
    mentions = chatter()
    outs = run_batches(PartitionEngine(DETECTOR_CFG), mentions)
    got = spikes_of(outs)
    assert got == predicted(mentions, DETECTOR_CFG.rule)  # type: ignore[arg-type]
    burst = T_DAY0 + 7 * DAY + 15 * HOUR + 20 * M
    assert (burst, FIVE, "BURST") in [(s[0], s[1], s[2]) for s in got]
    flood = T_DAY0 + 7 * DAY + 3 * HOUR
    assert not [s for s in got if flood <= s[0] < flood + HOUR]  # one account is no crowd
    spike = next(s for out in outs for s in out.spikes if s["window_start_ms"] == burst)
    assert spike["count"] >= spike["distinct_users"] >= 60 and spike["scored"] == "USERS"
    assert spike["sample_message_ids"] and spike["detected_at_ms"] > burst


def test_scoring_messages_the_one_account_flood_is_a_surge() -> None:
    """The engine hands the detectors messages and users apart: scoring messages (not the
    default) the flood hour alerts, with 80-odd messages from 3 users."""
    cfg = dataclasses.replace(
        DETECTOR_CFG, rule=detectors.DetectorRule(scored=detectors.Scored.MESSAGES)
    )
    mentions = chatter()
    got = spikes_of(run_batches(PartitionEngine(cfg), mentions))
    assert got == predicted(mentions, cfg.rule)  # type: ignore[arg-type]
    flood = T_DAY0 + 7 * DAY + 3 * HOUR
    assert [(s[0], s[1], s[2], s[5]) for s in got if s[0] == flood] == [
        (flood, HOUR, "SURGE", "MESSAGES")
    ]
    assert next(s[4] for s in got if s[0] == flood) <= 3  # distinct users in the window


def test_detector_state_lives_in_the_meta_row_and_a_rebuilt_engine_alerts_the_same() -> None:
    mentions = chatter()
    whole = spikes_of(run_batches(PartitionEngine(DETECTOR_CFG), mentions))
    cut = next(i for i, m in enumerate(mentions) if m.created_at_ms >= T_DAY0 + 6 * DAY)
    first = PartitionEngine(DETECTOR_CFG)
    outs = run_batches(first, mentions[:cut])
    table: dict[str, object] = {}
    _apply(table, first.persist(0))
    meta = json.loads(table["AAL"])  # type: ignore[arg-type]
    assert meta["detectors"]["surge"]["days"] == [5, 0]
    assert "baselines" not in meta
    second = PartitionEngine.from_rows(DETECTOR_CFG, table.items())
    assert second.states["AAL"].detectors == first.states["AAL"].detectors
    outs += run_batches(second, mentions[cut:], first_offset=10_000)
    assert spikes_of(outs) == whole and whole


def test_sentiment_records_say_whether_the_symbol_is_still_cold() -> None:
    outs = run_batches(PartitionEngine(DETECTOR_CFG), chatter())
    warm = [(s["window_end_ms"], s["baseline_warm"]) for out in outs for s in out.sentiments]
    assert warm[0][1] is False and warm[-1][1] is True
    flips = [end for (end, w), (_, before) in zip(warm[1:], warm, strict=False) if w != before]
    assert len(flips) == 1  # cold until the surge profile has 5 days, then warm
    assert T_DAY0 + 5 * DAY <= flips[0] <= T_DAY0 + 5 * DAY + HOUR
    no_rule = PartitionEngine(CFG)
    out = run_batches(no_rule, [mention(1, 1_000), mention(2, M + 6_000)])
    assert {s["baseline_warm"] for o in out for s in o.sentiments} == {None}


def test_a_window_emptied_by_destroys_is_not_scored() -> None:
    engine = PartitionEngine(DETECTOR_CFG)
    feed(engine, mention(1, T_DAY0 + 1_000), 1, 0)
    feed(engine, Mention(MentionKind.RETRACTION, "AAPL", 1, T_DAY0 + 1_000), 2, 0)
    feed(engine, mention(2, T_DAY0 + 2 * HOUR), 3, 0)
    assert engine.states["AAPL"].detectors.bursts == {}  # nothing observed yet
    assert engine.states["AAPL"].detectors.surge.last_start_ms is None

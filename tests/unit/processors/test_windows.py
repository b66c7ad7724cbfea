from __future__ import annotations

import pytest

from pulse.processors import detectors, sentiment
from pulse.processors.detectors import DetectorRule, DetectorState
from pulse.processors.mentions import Mention, MentionKind
from pulse.processors.sentiment import wilson_interval
from pulse.processors.spikes import SpikeRule
from pulse.processors.windows import (
    Pane,
    SymbolState,
    WindowConfig,
    WindowSpec,
    add_mention,
    chunk_json,
    close_windows,
    pane_size_ms,
    parse_windows,
    spike_record,
    window_start_ms,
    window_starts,
)

M = 60_000
H = 3_600_000
TUMBLE_1M = WindowSpec(M, M)
HOP_1H_5M = WindowSpec(H, 5 * M)


def test_parse_windows_sorted_and_deduplicated() -> None:
    specs = parse_windows("5m,1m,1h,1m", "1h/5m")
    assert specs == (WindowSpec(M, M), WindowSpec(5 * M, 5 * M), HOP_1H_5M, WindowSpec(H, H))
    assert [s.hopping for s in specs] == [False, False, True, False]


def test_window_spec_rejects_advance_not_dividing_size() -> None:
    with pytest.raises(ValueError):
        WindowSpec(H, 7 * M)


@pytest.mark.parametrize("event_ms, start", [(0, 0), (59_999, 0), (60_000, 60_000)])
def test_window_start_ms(event_ms: int, start: int) -> None:
    assert window_start_ms(event_ms, size_ms=60_000) == start


@pytest.mark.parametrize(
    "event_ms, spec, starts",
    [
        (90_000, TUMBLE_1M, [60_000]),
        (0, WindowSpec(10, 5), [-5, 0]),
        (7, WindowSpec(10, 5), [0, 5]),
        (H + 1, HOP_1H_5M, list(range(5 * M, H + 1, 5 * M))),
    ],
)
def test_window_starts(event_ms: int, spec: WindowSpec, starts: list[int]) -> None:
    assert window_starts(event_ms, spec) == starts


def test_hopping_window_has_twelve_windows_per_event() -> None:
    assert len(window_starts(123_456_789, HOP_1H_5M)) == 12


def test_pane_size_is_gcd() -> None:
    assert pane_size_ms(parse_windows("1m,5m,1h", "1h/5m")) == M
    assert pane_size_ms((WindowSpec(10 * M, 10 * M), WindowSpec(H, 15 * M))) == 5 * M


def cfg(
    specs: tuple[WindowSpec, ...] = (TUMBLE_1M,), grace_ms: int = 0, horizon_ms: int = H
) -> WindowConfig:
    return WindowConfig(specs=specs, grace_ms=grace_ms, revision_horizon_ms=horizon_ms)


def msg(
    message_id: int,
    t: int,
    user: int = 1,
    sentiment: str | None = None,
    kind: MentionKind = MentionKind.MESSAGE,
    symbol: str = "AAPL",
) -> Mention:
    return Mention(kind, symbol, message_id, t, user, sentiment)


def test_tumbling_window_counts_users_and_labels() -> None:
    state, c = SymbolState(), cfg()
    for m in [
        msg(1, 1_000, 7, "Bullish"),
        msg(2, 2_000, 7, "Bearish"),
        msg(3, 59_999, 8),
        msg(4, 60_000, 9),
    ]:
        assert add_mention(state, m, -1, c).counted
    closed = close_windows(state, "AAPL", M, c)
    assert len(closed) == 1
    r = closed[0].result
    assert (r.start_ms, r.end_ms, r.message_count, r.distinct_users) == (0, M, 3, 2)
    assert (r.bullish, r.bearish, r.unlabelled, r.revision) == (1, 1, 1, 0)
    assert r.sample_message_ids == (1, 2, 3)
    # emitted once: closing again at a later watermark brings only the next window
    again = close_windows(state, "AAPL", 2 * M, c)
    assert [x.result.start_ms for x in again] == [M]


def test_hopping_window_emits_the_whole_window() -> None:
    c = cfg(specs=(HOP_1H_5M,))
    state = SymbolState()
    # one mention per 5-minute step over an hour
    for i in range(12):
        add_mention(state, msg(i, i * 5 * M + 1), -1, c)
    closed = close_windows(state, "AAPL", H, c)
    full = [x.result for x in closed if x.result.start_ms == 0]
    assert len(full) == 1 and full[0].message_count == 12
    # windows that started before 0 and ended by the watermark closed too, each partial
    assert [x.result.message_count for x in closed] == list(range(1, 13))


def test_duplicate_message_counts_once() -> None:
    state, c = SymbolState(), cfg()
    assert add_mention(state, msg(1, 10), -1, c).counted
    assert not add_mention(state, msg(1, 10), -1, c).counted
    assert close_windows(state, "AAPL", M, c)[0].result.message_count == 1


def test_duplicate_after_its_window_closed_is_neither_counted_nor_late() -> None:
    # an at-least-once replay can redeliver a mention after the close; it was counted then
    state, c = SymbolState(), cfg(specs=(TUMBLE_1M, WindowSpec(5 * M, 5 * M)))
    add_mention(state, msg(1, 10), -1, c)
    close_windows(state, "AAPL", M, c)  # the 1-minute window closed, the pane is kept (5 min)
    again = add_mention(state, msg(1, 10), M, c)
    assert not again.counted and not again.late
    newcomer = add_mention(state, msg(2, 20), M, c)  # a new id that late is still late
    assert newcomer.late and not newcomer.counted


def test_late_beyond_grace_is_reported_not_counted() -> None:
    state, c = SymbolState(), cfg(grace_ms=5_000)
    watermark_ms = 100_000 - c.grace_ms
    applied = add_mention(state, msg(1, 90_000), watermark_ms, c)
    assert applied.late and applied.lateness_ms == 5_000 and not applied.counted
    within = add_mention(state, msg(2, 96_000), watermark_ms, c)
    assert within.counted and not within.late


def test_retraction_before_close_removes_contribution() -> None:
    state, c = SymbolState(), cfg()
    add_mention(state, msg(1, 10, 1, "Bullish"), -1, c)
    add_mention(state, msg(2, 20, 2, "Bearish"), -1, c)
    applied = add_mention(state, msg(1, 10, 1, "Bullish", MentionKind.RETRACTION), -1, c)
    assert applied.counted and applied.corrections == ()
    r = close_windows(state, "AAPL", M, c)[0].result
    assert (r.message_count, r.bullish, r.bearish, r.distinct_users) == (1, 0, 1, 1)


def test_retraction_after_emission_yields_correction_with_next_revision() -> None:
    state, c = SymbolState(), cfg(specs=(TUMBLE_1M, WindowSpec(5 * M, 5 * M)))
    add_mention(state, msg(1, 10, 1, "Bullish"), -1, c)
    add_mention(state, msg(2, 20, 2), -1, c)
    close_windows(state, "AAPL", 5 * M, c)
    applied = add_mention(state, msg(1, 10, 1, "Bullish", MentionKind.RETRACTION), 5 * M, c)
    assert [
        (x.spec.size_ms, x.revision, x.message_count, x.bullish) for x in applied.corrections
    ] == [(M, 1, 1, 0), (5 * M, 1, 1, 0)]
    # a second destroy of the same message changes nothing
    again = add_mention(state, msg(1, 10, 1, "Bullish", MentionKind.RETRACTION), 5 * M, c)
    assert again.corrections == () and not again.counted


def test_retraction_beyond_revision_horizon_is_late() -> None:
    state, c = SymbolState(), cfg(horizon_ms=M)
    add_mention(state, msg(1, 10), -1, c)
    close_windows(state, "AAPL", 3 * M, c)
    assert state.panes == {}
    applied = add_mention(state, msg(1, 10, kind=MentionKind.RETRACTION), 3 * M, c)
    assert applied.late and applied.corrections == ()


def test_retraction_of_unknown_message_is_ignored() -> None:
    state, c = SymbolState(), cfg()
    add_mention(state, msg(1, 10), -1, c)
    applied = add_mention(state, msg(99, 10, kind=MentionKind.RETRACTION), -1, c)
    assert not applied.counted and not applied.late
    assert close_windows(state, "AAPL", M, c)[0].result.message_count == 1


def test_message_redelivered_after_its_retraction_stays_out() -> None:
    state, c = SymbolState(), cfg()
    add_mention(state, msg(1, 10), -1, c)
    add_mention(state, msg(1, 10, kind=MentionKind.RETRACTION), -1, c)
    assert not add_mention(state, msg(1, 10), -1, c).counted


def test_score_mentions_feed_the_sentiment_mean() -> None:
    state, c = SymbolState(), cfg()
    add_mention(state, Mention(MentionKind.SCORE, "AAPL", 1, 10, 1, None, 0.5), -1, c)
    add_mention(state, Mention(MentionKind.SCORE, "AAPL", 2, 20, 1, None, -0.1), -1, c)
    add_mention(state, Mention(MentionKind.SCORE, "AAPL", 2, 20, 1, None, -0.1), -1, c)
    r = close_windows(state, "AAPL", M, c)[0].result
    rec = r.sentiment_record(emitted_at_ms=0)
    assert rec["sentiment_score_count"] == 2
    assert rec["sentiment_score_mean"] == pytest.approx(0.2)
    assert r.message_count == 0


def test_state_round_trips_through_json() -> None:
    import json

    state, c = SymbolState(), cfg(specs=(TUMBLE_1M, HOP_1H_5M))
    add_mention(state, msg(1, 10, 3, "Bullish"), -1, c)
    add_mention(state, Mention(MentionKind.SCORE, "AAPL", 1, 10, 3, None, 0.25), -1, c)
    close_windows(state, "AAPL", M, c)
    row = json.loads(json.dumps(state.to_json()))
    assert SymbolState.from_json(row) == state
    assert Pane.from_json(Pane().to_json()) == Pane()


def test_pane_chunks_hold_only_what_is_new_and_rebuild_the_pane() -> None:
    pane, rebuilt = Pane(), Pane()
    pane.add_message(1, 10, "Bullish")
    pane.add_score(1, 0.5)
    first = pane.take_chunk()
    pane.add_message(2, 11, None)
    assert pane.retract(1)
    second = pane.take_chunk()
    assert chunk_json(first) == {"m": {"1": [10, "Bullish"]}, "s": {"1": 0.5}, "r": []}
    assert chunk_json(second) == {"m": {"2": [11, None]}, "s": {}, "r": [1]}
    assert not pane.dirty() and pane.chunks == 2
    for chunk in (first, second):
        rebuilt.apply_chunk(chunk)
    assert (rebuilt.messages, rebuilt.scores, rebuilt.retracted, rebuilt.chunks) == (
        pane.messages,
        pane.scores,
        pane.retracted,
        pane.chunks,
    )


# --- per-user sentiment and the detectors at close ------------------------------------------


def test_sentiment_record_counts_messages_and_people() -> None:
    state, c = SymbolState(), cfg()
    labels = [(7, "Bullish")] * 5 + [
        (8, "Bearish"),
        (9, "Bearish"),
        (10, "Bullish"),
        (11, "Bullish"),
        (11, "Bearish"),
        (None, "Bearish"),
        (12, None),
    ]
    for i, (user, label) in enumerate(labels):
        add_mention(state, msg(i + 1, 1_000 + i, user, label), -1, c)  # type: ignore[arg-type]
    rec = close_windows(state, "AAPL", M, c)[0].result.sentiment_record(emitted_at_ms=5)
    assert (rec["bullish"], rec["bearish"]) == (7, 4)
    # users: 7 and 10 bullish; 8, 9 and the anonymous one bearish; 11 a tie abstains
    expected = sentiment.user_sentiment(labels).record_fields()
    assert {k: rec[k] for k in expected} == expected
    assert (rec["user_bullish"], rec["user_bearish"]) == (2, 3)
    assert rec["user_bullish_ratio_low"] == pytest.approx(wilson_interval(2, 5)[0])  # type: ignore[index]
    assert rec["baseline_warm"] is None  # no detectors configured


def test_a_correction_carries_the_per_user_fields() -> None:
    state, c = SymbolState(), cfg()
    add_mention(state, msg(1, 10, 1, "Bullish"), -1, c)
    add_mention(state, msg(2, 20, 1, "Bullish"), -1, c)
    add_mention(state, msg(3, 30, 2, "Bearish"), -1, c)
    first = close_windows(state, "AAPL", M, c)[0].result
    assert (first.user_bullish, first.user_bearish) == (1, 1)
    fix = add_mention(state, msg(3, 30, 2, "Bearish", MentionKind.RETRACTION), M, c)
    rec = fix.corrections[0].sentiment_record(emitted_at_ms=0)
    assert (rec["revision"], rec["user_bullish"], rec["user_bearish"]) == (1, 1, 0)
    assert rec["user_bullish_ratio"] == 1.0 and rec["bullish_ratio"] == 1.0


FIVE = 5 * M


def detector_cfg(rule: DetectorRule | None = None) -> WindowConfig:
    specs = (TUMBLE_1M, WindowSpec(FIVE, FIVE), WindowSpec(H, FIVE), WindowSpec(H, H))
    return WindowConfig(
        specs=specs,
        grace_ms=0,
        revision_horizon_ms=H,
        rule=rule or DetectorRule(burst=SpikeRule(warmup_windows=3)),
    )


def test_detectors_score_their_tumbling_windows_only_in_close_order() -> None:
    c = detector_cfg()
    assert c.detector_specs == {WindowSpec(FIVE, FIVE), WindowSpec(H, H)}
    state, direct = SymbolState(), DetectorState()
    n = 0
    for window in range(24):  # two hours: 2 messages per 5 minutes, then 40 people at once
        people = 40 if window == 20 else 2
        for i in range(people):
            n += 1
            add_mention(state, msg(n, window * FIVE + 1_000 + i, user=n % 1_000 + 3 * i), -1, c)
    closed = close_windows(state, "AAPL", 2 * H, c)
    fired = [x for x in closed if x.verdict is not None]
    assert [(x.result.spec.size_ms, x.result.start_ms) for x in fired] == [(FIVE, 20 * FIVE)]
    # the same windows fed to the pure API by hand, in close order (end, then size)
    scored = sorted(
        (
            (x.result.end_ms, x.result.spec.size_ms, x.result)
            for x in closed
            if x.result.spec in c.detector_specs
        ),
        key=lambda t: t[:2],
    )
    verdicts = [
        detectors.observe(
            direct, r.start_ms, r.spec.size_ms, r.message_count, r.distinct_users, c.rule
        )  # type: ignore[arg-type]
        for _, _, r in scored
    ]
    assert [v for v in verdicts if v is not None] == [fired[0].verdict]
    assert state.detectors == direct
    assert [x.warm for x in closed][-1] is False  # the hour-of-day profile needs 5 days


def test_spike_record_is_the_window_plus_the_verdict_and_fits_the_schema() -> None:
    c = detector_cfg()
    state = SymbolState()
    for window in range(6):
        for i in range(3 if window < 5 else 30):
            add_mention(
                state,
                msg(
                    window * 100 + i,
                    window * FIVE + i,
                    1_000 + i,
                    "Bullish" if i % 3 else "Bearish",
                ),
                -1,
                c,
            )
    closed = [x for x in close_windows(state, "AAPL", H, c) if x.verdict is not None]
    assert len(closed) == 1
    rec = spike_record(closed[0].result, closed[0].verdict, 99)  # type: ignore[arg-type]
    assert rec == {
        "symbol": "AAPL",
        "window_start_ms": 5 * FIVE,
        "window_end_ms": 6 * FIVE,
        "window_size_ms": FIVE,
        **closed[0].verdict.record_fields(),  # type: ignore[union-attr]
        "bullish_ratio": 20 / 30,
        "sample_message_ids": [500, 501, 502, 503, 504],
        "detected_at_ms": 99,
    }
    assert (rec["kind"], rec["count"], rec["distinct_users"]) == ("BURST", 30, 30)
    _round_trip("spike.avsc", rec)
    sent = closed[0].result.sentiment_record(emitted_at_ms=1, warm=False)
    assert _round_trip("window_sentiment.avsc", sent) == sent


def _round_trip(schema_file: str, record: dict[str, object]) -> dict[str, object]:
    """Encode with the project's writer and decode with fastavro: the record fits."""
    import io

    import fastavro

    from pulse.schemas.serde import load_schema, wire_encoder

    schema = load_schema(schema_file)
    data = wire_encoder(1, schema)(record)  # type: ignore[arg-type]
    return fastavro.schemaless_reader(io.BytesIO(data[5:]), fastavro.parse_schema(schema), None)  # type: ignore[return-value]


def test_symbol_state_of_a_v1_row_starts_its_detectors_cold() -> None:
    row = SymbolState().meta_json()
    del row["detectors"]
    row["baselines"] = {"300000/300000": {"n": 40}}
    assert SymbolState.from_json({**row, "panes": {}}).detectors == DetectorState()


# --- pane tallies: what a window merges instead of walking every message --------------------


def _naive(state: SymbolState, spec: WindowSpec, start_ms: int) -> tuple[object, ...]:
    """A window's tallies by walking every message of its panes (the definition)."""
    msgs = {
        i: state.panes[s].user_label(i)
        for s in range(start_ms, start_ms + spec.size_ms, M)
        if s in state.panes
        for i in state.panes[s].messages
    }
    scores = [
        v
        for s in range(start_ms, start_ms + spec.size_ms, M)
        for v in state.panes.get(s, Pane()).scores.values()
    ]
    labels = [ul for ul in msgs.values() if ul[1] in ("Bullish", "Bearish")]
    bullish = sum(1 for _, label in labels if label == "Bullish")
    return (
        len(msgs),
        len({u for u, _ in msgs.values() if u is not None}),
        bullish,
        len(labels) - bullish,
        len(msgs) - len(labels),
        len(scores),
        tuple(sorted(msgs)[:5]),
        sentiment.user_votes(labels),
    )


@pytest.mark.parametrize("seed", range(5))
def test_window_tallies_merged_from_panes_equal_a_walk_over_every_message(seed: int) -> None:
    import random

    from pulse.processors.windows import window_result

    rng = random.Random(seed)
    state, c = SymbolState(), cfg(specs=(TUMBLE_1M, HOP_1H_5M))
    ids: list[int] = []
    for n in range(3_000):
        if ids and rng.random() < 0.2:  # destroys, often of a pane's smallest ids
            victim = min(ids) if rng.random() < 0.3 else rng.choice(ids)
            ids.remove(victim)
            add_mention(
                state, msg(victim, (victim % 97) * 37_000, kind=MentionKind.RETRACTION), -1, c
            )
            continue
        mid = rng.randrange(1, 10**6)
        user = rng.choice([None, *range(1, 30)])
        m = Mention(
            MentionKind.MESSAGE,
            "AAPL",
            mid,
            (mid % 97) * 37_000,
            user,
            rng.choice((None, "Bullish", "Bearish")),
        )
        if add_mention(state, m, -1, c).counted:
            ids.append(mid)
        if n % 5 == 0:
            add_mention(
                state,
                Mention(
                    MentionKind.SCORE,
                    "AAPL",
                    mid,
                    (mid % 97) * 37_000,
                    user,
                    None,
                    rng.uniform(-1, 1),
                ),
                -1,
                c,
            )
        if n % 500 == 499:
            for spec in (TUMBLE_1M, HOP_1H_5M):
                for start in range(-H, 97 * 37_000, spec.advance_ms):
                    r = window_result(state, "AAPL", spec, start, 0, M)
                    assert (
                        r.message_count,
                        r.distinct_users,
                        r.bullish,
                        r.bearish,
                        r.unlabelled,
                        r.score_count,
                        r.sample_message_ids,
                        (r.user_bullish, r.user_bearish),
                    ) == _naive(state, spec, start)


def test_pane_tallies_are_rebuilt_from_chunks_and_from_json() -> None:
    pane = Pane()
    for i, (user, label) in enumerate(
        [
            (1, "Bullish"),
            (1, "Bearish"),
            (None, "Bullish"),
            (2, None),
            (3, "Bearish"),
            (4, "Bullish"),
        ]
    ):
        pane.add_message(10 - i, user, label)
    pane.retract(8)  # (None, Bullish)
    pane.add_score(9, 0.5)
    chunked = Pane()
    chunked.apply_chunk(pane.take_chunk())
    for other in (chunked, Pane.from_json(pane.to_json())):
        assert (
            other.bullish,
            other.bearish,
            other.anon_bullish,
            other.anon_bearish,
            other.messages,
            other.smallest(),
            other.score_sum(),
        ) == (pane.bullish, pane.bearish, 0, 0, pane.messages, (5, 6, 7, 9, 10), 0.5)
        assert other.messages == {
            10: (1, "Bullish"),
            9: (1, "Bearish"),
            7: (2, None),
            6: (3, "Bearish"),
            5: (4, "Bullish"),
        }


@pytest.mark.parametrize("votes", [(0, 0), (3, 0), (0, 2), (5, 7)])
def test_sentiment_record_per_user_fields_are_user_sentiments(votes: tuple[int, int]) -> None:
    from pulse.processors.windows import WindowResult

    r = WindowResult("AAPL", TUMBLE_1M, 0, 12, 9, 4, 5, 3, 0.0, 0, 0, (), *votes)
    rec = r.sentiment_record(0)
    assert {k: rec[k] for k in rec if k.startswith("user_")} == (
        sentiment.UserSentiment.of_votes(*votes).record_fields()
    )


@pytest.mark.parametrize("user", [None, 0, 1, 7, 2**40, -3])
@pytest.mark.parametrize("label", [None, "Bullish", "Bearish", "Neutral"])
def test_user_and_label_pack_into_one_int_and_back(user: int | None, label: str | None) -> None:
    from pulse.processors.windows import pack_user_label, unpack_user_label

    packed = pack_user_label(user, label)
    assert isinstance(packed, int) == (label != "Neutral")
    assert unpack_user_label(packed) == (user, label)
    pane = Pane()
    pane.add_message(5, user, label)
    chunk = pane.take_chunk(41)
    assert pane.user_label(5) == (user, label) and chunk_json(chunk)["m"] == {"5": [user, label]}
    rebuilt = Pane()
    assert rebuilt.apply_chunk(chunk) == 41 and rebuilt.user_label(5) == (user, label)

"""producers.synthetic: popularity, rhythm, bursts, labels — and every message parses."""

from __future__ import annotations

import itertools
from collections import Counter

import fastavro
import pytest
from fastavro.validation import validate

from pulse.producers import parse
from pulse.producers.synthetic import Burst, Config, Generator, daily_factor, envelopes
from pulse.schemas.serde import load_schema
from pulse.schemas.topics import MESSAGES

START = 1_656_460_800_000  # 2022-06-29T00:00:00Z


def take(config: Config, n: int) -> list[dict]:
    return list(itertools.islice(Generator(config, START), n))


def test_zipf_popularity_and_determinism() -> None:
    msgs = take(Config(symbols=200, rate_per_s=50), 20_000)
    assert msgs == take(Config(symbols=200, rate_per_s=50), 20_000)  # seeded
    counts = Counter(m["symbols"][0]["symbol"] for m in msgs)
    ranked = [s for s, _ in counts.most_common()]
    assert ranked[0] == "AAPL" and counts["AAPL"] > 5 * counts.get("ZQ0100", 0)
    assert len(counts) > 100  # a long tail, not a handful


def test_burst_multiplies_the_symbols_rate_in_its_window() -> None:
    burst = Burst("ZQ0050", start_s=600, duration_s=300, multiplier=50, bullish=0.9)
    msgs = take(Config(symbols=200, rate_per_s=20, bursts=(burst,)), 40_000)

    def in_window(m: dict, lo: float, hi: float) -> bool:
        t = (parse.timestamp_ms(m["created_at"]) - START) / 1000
        return lo <= t < hi

    during = [m for m in msgs if in_window(m, 600, 900)]
    before = [m for m in msgs if in_window(m, 0, 600)]
    share = lambda ms: sum(m["symbols"][0]["symbol"] == "ZQ0050" for m in ms) / len(ms)  # noqa: E731
    assert share(during) > 10 * max(share(before), 1e-3)
    labels = Counter(
        (m["entities"]["sentiment"] or {}).get("basic")
        for m in during
        if m["symbols"][0]["symbol"] == "ZQ0050"
    )
    assert labels["Bullish"] > 4 * labels["Bearish"]


def test_labels_multi_symbol_and_times() -> None:
    msgs = take(Config(), 5_000)
    labelled = sum(m["entities"]["sentiment"] is not None for m in msgs) / len(msgs)
    multi = sum(len(m["symbols"]) > 1 for m in msgs) / len(msgs)
    assert 0.35 < labelled < 0.55 and 0.05 < multi < 0.2
    times = [parse.timestamp_ms(m["created_at"]) for m in msgs]
    assert times == sorted(times) and times[0] >= START
    assert len({m["id"] for m in msgs}) == len(msgs)


@pytest.mark.parametrize("hour, high", [(15, True), (3, False)])
def test_daily_factor(hour: int, high: bool) -> None:
    f = daily_factor(START + hour * 3_600_000, amplitude=0.6, peak_hour_utc=15)
    assert (f > 1.5) if high else (f < 0.5)


def test_burst_parse() -> None:
    assert Burst.parse("gme@600+300x20") == Burst("GME", 600.0, 300.0, 20.0)


def test_every_message_parses_to_a_valid_record() -> None:
    schema = fastavro.parse_schema(load_schema(MESSAGES.schema_file))
    for line in itertools.islice(envelopes(iter(Generator(Config(), START))), 500):
        spec, _, rec = parse.firehose_event(line)
        assert spec is MESSAGES
        validate(rec, schema, raise_errors=True)

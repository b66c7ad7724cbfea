"""Synthetic Stocktwits message stream for demos and load tests.

Many symbols with Zipf-like popularity, a daily rhythm (busy around the US market open, quiet
at night), injected bursts on chosen symbols so spike detection has something to find,
author-labelled sentiment (with a per-symbol lean, and a chosen lean during a burst), and
multi-symbol messages. Generation is pure and seeded: the same options give the same stream.
Messages are shaped like upstream JSON and go through :mod:`producers.parse` like any other.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pulse.lifecycle import Stop, stop_on_signals
from pulse.producers import metrics, parse
from pulse.producers.publish import Publisher, now_ms
from pulse.schemas.topics import DEAD_LETTER, MESSAGES
from pulse.settings import Settings

HEAD = [
    "AAPL",
    "TSLA",
    "SPY",
    "NVDA",
    "AMD",
    "AMZN",
    "BTC.X",
    "ETH.X",
    "GME",
    "AMC",
    "META",
    "MSFT",
    "QQQ",
    "PLTR",
    "NIO",
    "SOFI",
    "COIN",
    "BABA",
    "DOGE.X",
    "F",
]
DAY_MS = 86_400_000
FIRST_ID = 900_000_000  # above the real captures' ids, below parse.SYNTHETIC_ID_BASE


@dataclass(frozen=True)
class Burst:
    """``symbol`` gets ``multiplier`` × its usual rate from ``start_s`` for ``duration_s``
    (seconds of stream time after the start), with ``bullish`` share of labelled messages."""

    symbol: str
    start_s: float
    duration_s: float
    multiplier: float = 20.0
    bullish: float = 0.85

    @classmethod
    def parse(cls, text: str) -> Burst:
        """``GME@600+300x20`` = GME from 600 s for 300 s at ×20."""
        symbol, _, rest = text.partition("@")
        start, _, rest = rest.partition("+")
        duration, _, mult = rest.partition("x")
        return cls(symbol.upper(), float(start), float(duration), float(mult or 20.0))


@dataclass(frozen=True)
class Config:
    symbols: int = 500
    rate_per_s: float = 20.0  # average over a day, all symbols together
    zipf_s: float = 1.1
    daily_amplitude: float = 0.6  # 0 = flat; rate ranges over (1 ± amplitude) × average
    peak_hour_utc: float = 15.0  # 10:00 New York
    labelled: float = 0.45  # share of messages with an author label
    multi_symbol: float = 0.12
    bursts: tuple[Burst, ...] = ()
    seed: int = 7
    users: int = 20_000


def symbol_names(n: int) -> list[str]:
    """Well-known tickers first, then made-up ones (``ZQ0021``) for the long tail."""
    return HEAD[:n] + [f"ZQ{i:04d}" for i in range(max(0, n - len(HEAD)))]


def daily_factor(t_ms: int, amplitude: float, peak_hour_utc: float) -> float:
    """Relative activity at wall time ``t_ms``: a cosine over the day peaking at the peak hour."""
    hour = (t_ms % DAY_MS) / 3_600_000
    return 1.0 + amplitude * math.cos(2 * math.pi * (hour - peak_hour_utc) / 24)


@dataclass
class Generator:
    """Yields upstream-shaped message dicts with increasing ``created_at`` from ``start_ms``."""

    config: Config
    start_ms: int
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self._rng = random.Random(c.seed)
        self.names = symbol_names(c.symbols)
        weights = [1.0 / (rank**c.zipf_s) for rank in range(1, len(self.names) + 1)]
        total = sum(weights)
        self.share = {s: w / total for s, w in zip(self.names, weights, strict=True)}
        self._cum = list(itertools.accumulate(w / total for w in weights))
        self.lean = {s: self._rng.uniform(0.35, 0.75) for s in self.names}  # P(bullish)

    def _pick(self) -> str:
        i = bisect.bisect_left(self._cum, self._rng.random() * self._cum[-1])
        return self.names[min(i, len(self.names) - 1)]

    def _active(self, t_ms: int) -> list[Burst]:
        offset_s = (t_ms - self.start_ms) / 1000
        return [b for b in self.config.bursts if b.start_s <= offset_s < b.start_s + b.duration_s]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        c, rng = self.config, self._rng
        t = float(self.start_ms)
        for message_id in itertools.count(FIRST_ID):
            bursts = self._active(int(t))
            extra = {b.symbol: self.share.get(b.symbol, 1e-4) * (b.multiplier - 1) for b in bursts}
            base = c.rate_per_s * daily_factor(int(t), c.daily_amplitude, c.peak_hour_utc)
            rate = base * (1 + sum(extra.values()))
            t += rng.expovariate(rate) * 1000
            burst = None
            if extra and rng.random() < sum(extra.values()) / (1 + sum(extra.values())):
                burst = rng.choices(bursts, weights=[extra[b.symbol] for b in bursts])[0]
            symbols = [burst.symbol if burst else self._pick()]
            if rng.random() < c.multi_symbol:
                symbols += [
                    s for s in (self._pick() for _ in range(rng.randint(1, 2))) if s not in symbols
                ]
            yield self._message(message_id, int(t), symbols, burst)

    def _message(self, message_id: int, t_ms: int, symbols: list[str], burst: Burst | None) -> dict:
        rng = self._rng
        sentiment = None
        if rng.random() < self.config.labelled:
            p_bull = burst.bullish if burst else self.lean[symbols[0]]
            sentiment = {"basic": "Bullish" if rng.random() < p_bull else "Bearish"}
        user = rng.randrange(self.config.users)
        created = datetime.fromtimestamp(t_ms / 1000, UTC).isoformat(timespec="milliseconds")
        return {
            "id": message_id,
            "body": " ".join(f"${s}" for s in symbols)
            + rng.choice(
                [" to the moon", " looks weak here", " breaking out", " holding", " earnings soon"]
            ),
            "created_at": created.replace("+00:00", "Z"),
            "user": {"id": 10_000_000 + user, "username": f"synth{user}", "official": False},
            "symbols": [{"symbol": s, "title": s} for s in symbols],
            "entities": {"sentiment": sentiment},
            "source": {"id": 0, "title": "pulse synthetic", "url": None},
        }


def envelopes(messages: Iterator[dict[str, Any]], first_seq: int = 10**20) -> Iterator[bytes]:
    """Firehose JSON lines for ``messages`` (for the benchmark and JSONL demo captures)."""
    import orjson

    for seq, m in enumerate(messages, first_seq):
        yield orjson.dumps(
            {
                "object": "Message",
                "action": "create",
                "data": m,
                "time": m["created_at"],
                "seq_id": str(seq),
            }
        )


def run(
    settings: Settings,
    config: Config,
    *,
    count: int | None = None,
    speed: float = 1.0,
    start: str | None = None,
    jsonl: str | None = None,
    metrics_port: int | None = None,
) -> int:
    """``pulse produce synthetic``: a generated message stream → stocktwits.messages (or
    Firehose JSON lines in the file ``jsonl``); the exit code.

    :param count: stop after this many messages (None: never).
    :param speed: stream time ×N wall time; 0 = as fast as possible.
    :param start: stream start, ISO-8601 UTC (None: now).
    """
    start_ms = parse.timestamp_ms(start) if start else now_ms()
    messages = iter(Generator(config, start_ms))
    if count is not None:
        messages = itertools.islice(messages, count)
    if jsonl:
        with open(jsonl, "wb") as out:
            for line in envelopes(messages):
                out.write(line + b"\n")
        return 0
    from pulse.schemas.admin import ensure_topics

    ensure_topics(settings, (MESSAGES, DEAD_LETTER))
    publisher = Publisher(settings, "synthetic")
    port = settings.metrics_port if metrics_port is None else metrics_port
    server = metrics.serve(settings, port, lambda: {"healthy": True, **publisher.stats()})
    stop = Stop()
    wall0 = time.monotonic()
    n = 0
    with stop_on_signals(stop):
        for n, m in enumerate(messages, 1):  # noqa: B007 - n is the count afterwards
            if speed > 0:
                due = wall0 + (parse.timestamp_ms(m["created_at"]) - start_ms) / 1000 / speed
                if stop.sleep(due - time.monotonic()):
                    break
            if stop:
                break
            publisher.publish(parse.message_event(m, origin="synthetic"))
        left = publisher.flush(120)
    if server is not None:
        server.stop()
    print(f"synthetic: {n} messages in {time.monotonic() - wall0:.1f}s")
    return 0 if left == 0 and publisher.failed == 0 else 1

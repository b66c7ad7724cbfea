"""Trending, chart and REST pollers against the fake upstream and the real Kafka + registry."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pulse.backoff import Backoff
from pulse.producers.parse import chart_key
from pulse.producers.pollers import (
    ChartPoller,
    Http,
    RestPoller,
    SeenIds,
    TrendingPoller,
    written_keys,
)
from pulse.producers.publish import Publisher
from pulse.producers.upstream import FatalUpstreamError
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde
from pulse.schemas.topics import DEAD_LETTER, MESSAGES, SENTIMENT_CHART, TRENDING
from pulse.settings import Settings
from tests.conftest import consume
from tests.support.data import API_JSON
from tests.support.stocktwits_server import FakeStocktwits, message

pytestmark = pytest.mark.integration
ETH_FILES = sorted(
    API_JSON.glob("*.json"),
    key=lambda p: int(p.stem.split("_")[1]),  # the order they were polled in
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeStocktwits]:
    server = FakeStocktwits()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def poller_settings(settings: Settings, url: str) -> Settings:
    ensure_topics(settings, (TRENDING, SENTIMENT_CHART, MESSAGES, DEAD_LETTER))
    return settings.replace(
        trending_url=f"{url}/trending",
        trending_api_key="key",
        chart_url=f"{url}/chart",
        rest_url=f"{url}/api/2",
        firehose_username="user",
        firehose_password="secret",
    )


def http(session: aiohttp.ClientSession, source: str) -> Http:
    return Http(session, source, asyncio.Event(), backoff=Backoff(0.01, 0.05))


def decoded(settings: Settings, spec: Any, n: int, timeout_s: float = 30) -> list[tuple[str, dict]]:
    serde = Serde(settings)
    msgs = consume(settings, spec.full_name(settings), n, timeout_s=timeout_s)
    return [(m.key().decode(), serde.decode(spec, m.value())) for m in msgs]


def trending_row(rank: int) -> dict[str, Any]:
    return {
        "rank": rank,
        "symbol": f"S{rank}",
        "title": f"Sym {rank}",
        "trending_score": 30 - rank,
        "watchlist_count": 1000 * rank,
        "price": 10.5,
        "volume": 5,
    }


async def test_trending_pages_and_429(
    settings: Settings, fake: FakeStocktwits, session: aiohttp.ClientSession
) -> None:
    cfg = poller_settings(settings, fake.url)
    fake.trending_pages = {
        p: {
            "data": {
                "page": p,
                "has_more": p < 3,
                "total_returned": 30,
                "market_indexes": [{"symbol": "SPY", "price": 741.44}],
                "trending_symbols": [trending_row((p - 1) * 30 + i) for i in range(1, 31)],
            },
            "status": "success",
        }
        for p in (1, 2, 3)
    }
    fake.trending_429 = 2
    publisher = Publisher(cfg, "trending")
    h = http(session, "trending")
    poller = TrendingPoller(cfg, publisher, h, asset_class="equity", region="US", limit=50)
    assert await poller.poll_once() == 90
    assert publisher.flush(30) == 0
    got = decoded(cfg, TRENDING, 90)
    assert sorted(k for k, _ in got) == sorted(f"S{i}" for i in range(1, 91))
    assert all(r["market_indexes"][0]["symbol"] == "SPY" and r["region"] == "US" for _, r in got)
    assert len({r["snapshot_ms"] for _, r in got}) == 1
    pages = [
        (r.query["page"], r.query["limit"], r.query["class"])
        for r in fake.requests
        if r.status == 200
    ]
    assert pages == [("1", "30", "equity"), ("2", "30", "equity"), ("3", "30", "equity")]
    assert h.rate_limited == 2 and [r.status for r in fake.requests][:2] == [429, 429]


async def test_trending_bad_key_is_fatal(
    settings: Settings, fake: FakeStocktwits, session: aiohttp.ClientSession
) -> None:
    cfg = poller_settings(settings, fake.url).replace(trending_api_key="nope")
    poller = TrendingPoller(cfg, Publisher(cfg, "trending"), http(session, "trending"))
    with pytest.raises(FatalUpstreamError, match="401"):
        await poller.poll_once()


async def test_chart_writes_only_new_points_and_survives_503(
    settings: Settings, fake: FakeStocktwits, session: aiohttp.ClientSession
) -> None:
    cfg = poller_settings(settings, fake.url)

    def chart(minutes: list[int]) -> dict[str, Any]:
        return {
            "data": {
                f"2025-04-29T13:{m:02d}:00Z": {
                    "dateTime": f"2025-04-29T13:{m:02d}:00Z",
                    "messageVolumeNormalized": m,
                    "messageVolumeNormalizedLabel": "LOW",
                    "sentimentNormalized": 65,
                    "sentimentNormalizedLabel": "BULLISH",
                }
                for m in minutes
            }
        }

    fake.charts = {"AAPL": chart([30, 35]), "TSLA": chart([30])}
    fake.chart_503 = 2
    publisher = Publisher(cfg, "chart")
    poller = ChartPoller(cfg, publisher, http(session, "chart"), ["AAPL", "TSLA"], "1D")
    assert await poller.poll_once() == 3
    assert await poller.poll_once() == 0  # nothing new
    fake.charts["AAPL"] = chart([30, 35, 40])
    assert await poller.poll_once() == 1
    assert publisher.flush(30) == 0
    # a restarted poller learns what was written from the topic's keys
    latest = ChartPoller.latest_from_keys(written_keys(cfg, SENTIMENT_CHART))
    assert latest == {("AAPL", "1D"): 1745934000000, ("TSLA", "1D"): 1745933400000}
    restarted = ChartPoller(
        cfg, publisher, http(session, "chart"), ["AAPL", "TSLA"], "1D", latest=latest
    )
    assert await restarted.poll_once() == 0
    got = decoded(cfg, SENTIMENT_CHART, 5, timeout_s=5)
    assert sorted(k for k, _ in got) == sorted(
        [
            chart_key("AAPL", "1D", 1745933400000),
            chart_key("AAPL", "1D", 1745933700000),
            chart_key("AAPL", "1D", 1745934000000),
            chart_key("TSLA", "1D", 1745933400000),
        ]
    )
    assert [r.status for r in fake.requests][:2] == [503, 503]


async def test_rest_overlapping_real_eth_polls_land_74_messages_once(
    settings: Settings, fake: FakeStocktwits, session: aiohttp.ClientSession
) -> None:
    cfg = poller_settings(settings, fake.url)
    assert len(ETH_FILES) == 45
    fake.rest = {"symbol/ETH.X": [json.loads(f.read_bytes()) for f in ETH_FILES]}
    fake.rest_429 = 1
    publisher = Publisher(cfg, "rest")
    h = http(session, "rest")
    poller = RestPoller(cfg, publisher, h, ["symbol:ETH.X"], min_interval_s=0.0)
    written = 0
    for _ in range(45):
        written += await poller.poll_stream("symbol/ETH.X")
    assert publisher.flush(30) == 0
    assert written == 74
    got = decoded(cfg, MESSAGES, 75, timeout_s=5)
    keys = Counter(k for k, _ in got)
    assert len(keys) == 74 and max(keys.values()) == 1
    assert all(r["origin"] == "rest" and r["action"] == "create" for _, r in got)
    sinces = [r.query.get("since") for r in fake.requests if r.status == 200]
    assert sinces[0] is None and all(sinces[1:])  # every later poll carries the cursor
    assert h.rate_limited == 1


async def test_rest_pages_back_when_more_than_a_page_is_new(
    settings: Settings, fake: FakeStocktwits, session: aiohttp.ClientSession
) -> None:
    cfg = poller_settings(settings, fake.url)
    first = [message(i) for i in range(100, 90, -1)]
    burst = [message(i) for i in range(200, 100, -1)]  # 100 new: more than one page of 30
    fake.rest = {"trending": [{"messages": first}]}
    publisher = Publisher(cfg, "rest")
    seen = SeenIds()
    poller = RestPoller(
        cfg, publisher, http(session, "rest"), ["trending"], seen=seen, min_interval_s=0.0
    )
    assert await poller.poll_stream("trending") == 10

    fake.rest = {"trending": [{"messages": burst + first}]}  # served 30 at a time
    assert await poller.poll_stream("trending") == 100
    maxes = [r.query.get("max") for r in fake.requests if r.status == 200][1:]
    assert maxes == [None, "170", "140", "110"]  # paged back until it met the since cursor
    assert publisher.flush(30) == 0
    got = decoded(cfg, MESSAGES, 111, timeout_s=5)
    assert sorted(int(k) for k, _ in got) == list(range(91, 101)) + list(range(101, 201))


async def test_rest_throttles_from_rate_limit_headers(
    settings: Settings, fake: FakeStocktwits, session: aiohttp.ClientSession
) -> None:
    cfg = poller_settings(settings, fake.url)
    fake.rest = {"all": [{"messages": [message(1)]}]}
    fake.rest_remaining = 3
    poller = RestPoller(
        cfg, Publisher(cfg, "rest"), http(session, "rest"), ["all"], min_interval_s=2.0
    )
    assert await poller.poll_stream("all") == 1
    # 2 requests left for the hour: spread them, one every ~30 min
    assert 1700 < poller.pause_s() <= 1800
    fake.rest_remaining = 100_000
    await poller.poll_stream("all")
    assert poller.pause_s() == 2.0  # plenty left: the floor applies


async def test_chart_bad_credentials_are_fatal(
    settings: Settings, fake: FakeStocktwits, session: aiohttp.ClientSession
) -> None:
    cfg = poller_settings(settings, fake.url).replace(firehose_password="nope")
    poller = ChartPoller(cfg, Publisher(cfg, "chart"), http(session, "chart"), ["AAPL"], "1D")
    with pytest.raises(FatalUpstreamError, match="401"):
        await poller.poll_once()

"""Each poller fed a gzip bomb and an endless body by the fake upstream, against the real Kafka
+ registry: memory stays bounded, the body goes to the dead-letter topic as ``too_large``,
and the next round of the same poller works."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from pulse.backoff import Backoff
from pulse.producers.parse import MAX_PAYLOAD_BYTES
from pulse.producers.pollers import ChartPoller, Http, RestPoller, TrendingPoller
from pulse.producers.publish import Publisher
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde
from pulse.schemas.topics import DEAD_LETTER, MESSAGES, SENTIMENT_CHART, TRENDING
from pulse.settings import Settings
from tests.conftest import consume
from tests.support.stocktwits_server import BOMB_INFLATED_BYTES, FakeStocktwits, message

pytestmark = pytest.mark.integration
# the body limit is 1 MiB; allow the chunk in flight, aiohttp's buffers and the fake server
# (same process) their share, and still stay far below what the bomb or the stream would take
PEAK_BUDGET_BYTES = 12 * MAX_PAYLOAD_BYTES


@pytest.fixture
async def fake() -> AsyncIterator[FakeStocktwits]:
    server = FakeStocktwits()
    await server.start()
    yield server
    await server.stop()


def configured(settings: Settings, url: str) -> Settings:
    ensure_topics(settings, (TRENDING, SENTIMENT_CHART, MESSAGES, DEAD_LETTER))
    return settings.replace(
        trending_url=f"{url}/trending",
        trending_api_key="key",
        chart_url=f"{url}/chart",
        rest_url=f"{url}/api/2",
        firehose_username="user",
        firehose_password="secret",
    )


def make_poller(kind: str, cfg: Settings, publisher: Publisher, http: Http) -> Any:
    if kind == "trending":
        return TrendingPoller(cfg, publisher, http)
    if kind == "chart":
        return ChartPoller(cfg, publisher, http, ["AAPL"], "1D")
    return RestPoller(cfg, publisher, http, ["symbol:AAPL"], min_interval_s=0.0)


def good_answers(fake: FakeStocktwits) -> None:
    fake.trending_pages = {
        1: {"data": {"page": 1, "has_more": False, "trending_symbols": [{"symbol": "AAPL"}]}}
    }
    point = {"dateTime": "2025-04-29T13:30:00Z", "sentimentNormalized": 60}
    fake.charts = {"AAPL": {"data": {"2025-04-29T13:30:00Z": point}}}
    fake.rest = {"symbol/AAPL": [{"messages": [message(7, ["AAPL"])]}]}


async def peak_bytes(work: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
    """What ``work`` returns, and the peak of Python allocations while it ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = await work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("mode", ["bomb", "endless"])
@pytest.mark.parametrize("kind", ["trending", "chart", "rest"])
async def test_a_hostile_body_is_bounded_dead_lettered_and_the_poller_goes_on(
    settings: Settings, fake: FakeStocktwits, kind: str, mode: str
) -> None:
    cfg = configured(settings, fake.url)
    good_answers(fake)
    fake.hostile = {kind: [mode]}
    publisher = Publisher(cfg, kind)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        http = Http(
            session, kind, asyncio.Event(), backoff=Backoff(0.01, 0.05), reject=publisher.reject
        )
        poller = make_poller(kind, cfg, publisher, http)
        written, peak = await peak_bytes(poller.poll_once)
        assert written == 0 and http.too_large == 1
        assert peak < PEAK_BUDGET_BYTES, f"{peak} bytes at peak"
        assert peak < BOMB_INFLATED_BYTES // 20
        # the same poller, next round: upstream answers normally and the record lands
        assert await poller.poll_once() == 1
    assert publisher.flush(30) == 0
    serde = Serde(cfg)
    [dead] = consume(cfg, DEAD_LETTER.full_name(cfg), 1, timeout_s=15)
    record = serde.decode(DEAD_LETTER, dead.value())
    assert record["reason"] == "too_large" and record["source"] == kind
    assert ("after decompression" if mode == "bomb" else "received") in record["error"]
    assert len(record["raw"]) <= 4096
    [good] = consume(cfg, make_topic(kind).full_name(cfg), 1, timeout_s=15)
    assert good.key() is not None


def make_topic(kind: str) -> Any:
    return {"trending": TRENDING, "chart": SENTIMENT_CHART, "rest": MESSAGES}[kind]

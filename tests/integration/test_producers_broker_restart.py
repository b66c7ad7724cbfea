"""Broker stopped for ~10 s mid-stream and restarted: no event lost, none duplicated.

Stopping the shared broker would break every other test, so this one starts a private,
throwaway Kafka through the embedded stack (``pulse.local``) and uses the shared registry.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from pulse.local.stack import LocalStack
from pulse.producers.firehose import STREAM, FirehoseClient, Resume
from pulse.producers.publish import Publisher
from pulse.schemas.admin import ensure_topics
from pulse.schemas.topics import CHECKPOINTS, DEAD_LETTER, LIKES, MESSAGES, SOCIAL
from pulse.settings import Settings
from tests.conftest import consume, records_in
from tests.integration.test_producers_firehose import fake_settings, fast_backoff
from tests.support.stocktwits_server import FakeStocktwits, message_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def stop_kafka(stack: LocalStack) -> None:
    stack.down(timeout_s=60, only="kafka")
    assert not stack.running()["kafka"]


async def test_broker_down_10s_mid_stream_loses_nothing(
    private_broker: tuple[LocalStack, Settings],
) -> None:
    stack, settings = private_broker
    total = 3_000
    fake = FakeStocktwits(events=message_events(total), chunk_delay_s=0.004)
    url = await fake.start()
    cfg = fake_settings(settings, url)
    ensure_topics(cfg, (MESSAGES, LIKES, SOCIAL, CHECKPOINTS, DEAD_LETTER))
    publisher = Publisher(cfg, "firehose")
    client = FirehoseClient(
        cfg, STREAM, publisher, resume=Resume(), backoff=fast_backoff(), max_events=total
    )
    run = asyncio.create_task(client.run())
    try:
        deadline = time.monotonic() + 60
        while publisher.delivered < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.to_thread(stop_kafka, stack)
        down_at = client.events
        await asyncio.sleep(10)
        await asyncio.to_thread(stack.up, 240, False)  # the broker only
        await asyncio.wait_for(run, timeout=240)
    finally:
        await fake.stop()
    assert down_at < total - 500, "the stream should still be flowing while the broker is down"
    assert publisher.failed == 0 and publisher.dead_lettered == 0
    # every record on the topic (a duplicate would be one more)
    topic = MESSAGES.full_name(cfg)
    got = await asyncio.to_thread(consume, cfg, topic, records_in(cfg, topic), 30.0)
    keys = Counter(m.key() for m in got)
    assert len(keys) == total and max(keys.values()) == 1

"""Firehose client against the fake upstream and the real Kafka + registry."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pulse.backoff import Backoff
from pulse.producers.firehose import (
    SENTIMENT,
    SEQ_HEADER,
    STREAM,
    FirehoseClient,
    recover,
)
from pulse.producers.publish import Publisher
from pulse.producers.upstream import FatalUpstreamError
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde
from pulse.schemas.topics import CHECKPOINTS, DEAD_LETTER, LIKES, MESSAGES, RAW_SENTIMENT, SOCIAL
from pulse.settings import Settings
from tests.conftest import consume
from tests.support.stocktwits_server import FakeStocktwits, envelope, message, message_events

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def fake_settings(settings: Settings, url: str) -> Settings:
    return settings.replace(
        firehose_url=url,
        firehose_username="user",
        firehose_password="secret",
        firehose_read_timeout_s=5.0,
    )


def fast_backoff() -> Backoff:
    return Backoff(base_s=0.01, cap_s=0.05)


async def run_client(
    settings: Settings, fake: FakeStocktwits, total: int, **kw: Any
) -> FirehoseClient:
    ensure_topics(settings, (MESSAGES, LIKES, SOCIAL, RAW_SENTIMENT, CHECKPOINTS, DEAD_LETTER))
    stream = kw.pop("stream", STREAM)
    publisher = Publisher(settings, stream.source)
    resume = await asyncio.to_thread(recover, settings, stream, publisher.serde)
    client = FirehoseClient(
        settings,
        stream,
        publisher,
        resume=resume,
        backoff=fast_backoff(),
        max_events=total,
        checkpoint_interval_s=0.2,
        **kw,
    )
    await asyncio.wait_for(client.run(), timeout=120)
    return client


def decoded(
    settings: Settings, spec: Any, n: int, timeout_s: float = 60
) -> list[tuple[str, dict[str, Any], Any]]:
    serde = Serde(settings)
    msgs = consume(settings, spec.full_name(settings), n, timeout_s=timeout_s)
    return [(m.key().decode(), serde.decode(spec, m.value()), m) for m in msgs]


async def test_20_disconnects_in_10k_events_every_event_once_in_order(settings: Settings) -> None:
    events = message_events(9_900)
    # 100 destroys of earlier messages: a key then carries create → destroy, in that order
    base = events[-1][0]
    events += [
        (base + 1 + i, envelope(base + 1 + i, "Message", {"id": 1 + i * 7}, "destroy"))
        for i in range(100)
    ]
    fake = FakeStocktwits(events=events, drop_every=480, drops=20, fail_503=2, multiline_every=9)
    url = await fake.start()
    try:
        cfg = fake_settings(settings, url)
        client = await run_client(cfg, fake, total=10_000)
    finally:
        await fake.stop()
    assert client.publisher.failed == 0 and client.publisher.dead_lettered == 0
    got = decoded(cfg, MESSAGES, 10_000)
    assert len(got) == 10_000
    pairs = Counter((key, rec["action"]) for key, rec, _ in got)
    assert max(pairs.values()) == 1, "an event landed twice"
    assert len(pairs) == 10_000
    by_key: dict[str, list[str]] = {}
    for key, rec, _ in sorted(got, key=lambda g: (g[2].partition(), g[2].offset())):
        by_key.setdefault(key, []).append(rec["action"])
    assert all(by_key[str(1 + i * 7)] == ["create", "destroy"] for i in range(100))
    # 20 cuts + 2 refusals, each reconnect resuming right after the last event handed to Kafka
    assert client.reconnects == 22
    resumes = [r.query.get("seq_id") for r in fake.requests if r.status == 200][1:]
    assert len(resumes) == 20 and all(resumes)
    assert [int(s) for s in resumes] == sorted(int(s) for s in resumes)
    # seq_ids travel in a header, and the checkpoint reached the last event
    assert all(m.headers() and m.headers()[0][0] == SEQ_HEADER for _, _, m in got[:10])
    assert (await asyncio.to_thread(recover, cfg, STREAM)).seq_id == str(events[-1][0])


async def test_hostile_input_goes_to_dead_letter_and_stream_continues(settings: Settings) -> None:
    seq = iter(range(10**20, 10**20 + 100))
    good = lambda i: (s := next(seq), envelope(s, "Message", message(i)))  # noqa: E731
    raw = lambda payload: (s := next(seq), payload.replace(b"SEQ", str(s).encode()))  # noqa: E731
    events = [
        good(1),
        raw(b'{"object": "Message", "action": "create", "seq_id": "SEQ", "data": {"id": 5,'),
        good(2),
        raw(b'{"object": "Message", "action": "create", "seq_id": "SEQ", "data": {"id": "x"}}'),
        raw(b'{"seq_id": "SEQ", "object": "Message", "body": "\xff\xfe invalid utf-8"}'),
        raw(b'{"seq_id": "SEQ", "object": "Watchlist", "action": "create", "data": {}}'),
        raw(b'{"seq_id": "SEQ", "pad": "' + b"x" * (1 << 21) + b'"}'),
        good(3),
        (
            next(seq),
            envelope(
                10**20 + 98,
                "LikeMessage",
                {"id": 9, "message_id": 1, "user_id": 2, "created_at": "2022-06-29T16:56:05Z"},
            ),
        ),
        (
            next(seq),
            envelope(10**20 + 99, "Friendship", {"id": 4, "user_id": 2, "following_user_id": 3}),
        ),
        good(4),
    ]
    fake = FakeStocktwits(events=events)
    url = await fake.start()
    try:
        cfg = fake_settings(settings, url)
        client = await run_client(cfg, fake, total=len(events))
    finally:
        await fake.stop()
    assert sorted(k for k, _, _ in decoded(cfg, MESSAGES, 4)) == ["1", "2", "3", "4"]
    assert [k for k, _, _ in decoded(cfg, LIKES, 1)] == ["9"]
    assert [k for k, _, _ in decoded(cfg, SOCIAL, 1)] == ["FRIENDSHIP:4"]
    letters = decoded(cfg, DEAD_LETTER, 5)
    reasons = sorted(rec["reason"] for _, rec, _ in letters)
    assert reasons == [
        "invalid_json",
        "invalid_json",
        "invalid_record",
        "too_large",
        "unknown_object",
    ]
    assert all(rec["source"] == "firehose" and rec["raw"] for _, rec, _ in letters)
    utf8 = [rec for _, rec, _ in letters if b"\xff\xfe" in rec["raw"]]
    assert len(utf8) == 1  # kept byte for byte
    assert client.publisher.dead_lettered == 5


async def test_sentiment_stream(settings: Settings) -> None:
    events = [
        (
            10**20 + i,
            json.dumps(
                {
                    "message_id": 100 + i,
                    "seq_id": str(10**20 + i),
                    "created_at": "2017-02-01T19:19:18Z",
                    "user_id": 1,
                    "sentiment_score": (i % 21 - 10) / 10,
                    "symbols": [{"symbol": "ABC"}],
                }
            ).encode(),
        )
        for i in range(50)
    ]
    fake = FakeStocktwits(sentiment_events=events, drop_every=20, drops=2)
    url = await fake.start()
    try:
        cfg = fake_settings(settings, url)
        await run_client(cfg, fake, total=50, stream=SENTIMENT)
    finally:
        await fake.stop()
    got = decoded(cfg, RAW_SENTIMENT, 50)
    assert sorted(int(k) for k, _, _ in got) == list(range(100, 150))
    assert {rec["sentiment_score"] for _, rec, _ in got} >= {-1.0, 0.0, 1.0}


def producer_env(settings: Settings, url: str, password: str = "secret") -> dict[str, str]:
    return {
        **os.environ,
        "PULSE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PULSE_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "PULSE_TOPIC_PREFIX": settings.topic_prefix,
        "PULSE_RAW_PARTITIONS": str(settings.raw_partitions),
        "PULSE_SYMBOL_PARTITIONS": str(settings.symbol_partitions),
        "PULSE_FIREHOSE_URL": url,
        "PULSE_FIREHOSE_USERNAME": "user",
        "PULSE_FIREHOSE_PASSWORD": password,
        "PULSE_METRICS_PORT": "-1",
        "PYTHONPATH": str(ROOT),
    }


async def spawn(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pulse.cli",
        "produce",
        "firehose",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_401_exits_nonzero_with_clear_message(settings: Settings) -> None:
    fake = FakeStocktwits(events=message_events(5))
    url = await fake.start()
    try:
        proc = await spawn(producer_env(settings, url, password="wrong"))
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        await fake.stop()
    assert proc.returncode == 2
    assert b"401 Unauthorized" in err and b"PULSE_FIREHOSE_PASSWORD" in err
    assert b"wrong" not in err  # the password itself is never printed
    assert fake.connections == 1  # no retry loop


async def test_fake_refuses_without_gzip() -> None:
    fake = FakeStocktwits(events=message_events(1))
    url = await fake.start()
    try:
        auth = {"Authorization": aiohttp.encode_basic_auth("user", "secret")}
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(f"{url}/stream", headers={"Accept-Encoding": "identity"}) as r:
                assert r.status == 406 and "Accept-Encoding: gzip" in await r.text()
    finally:
        await fake.stop()


async def test_406_stops_with_a_gzip_message(settings: Settings) -> None:
    fake = FakeStocktwits(events=message_events(1), require_encoding="br")  # refuses our gzip
    url = await fake.start()
    try:
        with pytest.raises(FatalUpstreamError, match="requires gzip"):
            await run_client(fake_settings(settings, url), fake, total=1)
    finally:
        await fake.stop()
    assert fake.connections == 1


async def test_kill_and_restart_resumes_without_gap_or_duplicate(settings: Settings) -> None:
    total = 6_000
    fake = FakeStocktwits(events=message_events(total), chunk_delay_s=0.0015)
    url = await fake.start()
    cfg = fake_settings(settings, url)
    env = producer_env(cfg, url)
    try:
        first = await spawn(env, "--checkpoint-interval", "0.3")
        # let it write part of the stream, then kill it without any chance to flush
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if (
                len(fake.requests)
                and len(await asyncio.to_thread(consume, cfg, MESSAGES.full_name(cfg), 1000, 2.0))
                >= 1000
            ):
                break
        first.send_signal(signal.SIGKILL)
        await first.wait()
        before = await asyncio.to_thread(recover, cfg, STREAM)
        assert before.seq_id is not None
        assert 500 <= int(before.seq_id) - 10**20 < total - 1, "killed too late to prove much"
        second = await spawn(env)
        await asyncio.to_thread(consume, cfg, MESSAGES.full_name(cfg), total, 45.0)
        second.send_signal(signal.SIGTERM)  # flushes: a duplicate would be on the topic now
        _, err = await asyncio.wait_for(second.communicate(), timeout=60)
        got = await asyncio.to_thread(consume, cfg, MESSAGES.full_name(cfg), total + 1, 5.0)
    finally:
        await fake.stop()
    assert second.returncode == 0, err.decode()[-2000:]
    keys = Counter(m.key().decode() for m in got)
    assert len(keys) == total, f"gap: {total - len(keys)} missing"
    assert max(keys.values()) == 1, "duplicate after restart"
    resumed = [r.query.get("seq_id") for r in fake.requests if r.status == 200]
    assert resumed[0] is None and resumed[1] == before.seq_id
    assert f"resuming /stream after seq_id {before.seq_id}".encode() in err
    # the kill left events past the checkpoint in Kafka: the restart found and skipped them
    found = re.search(rb"(\d+) later event\(s\) already in Kafka", err)
    assert found and int(found.group(1)) > 0

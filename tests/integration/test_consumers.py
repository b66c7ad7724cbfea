"""``pulse tail`` and ``pulse alerts`` against the real broker + registry and a local webhook."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka import Consumer, Producer, TopicPartition

from pulse.consumers import tail
from pulse.consumers.alerts import AlertConsumer, redact
from pulse.consumers.tail import TailOptions
from pulse.schemas import topics
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde
from pulse.settings import Settings
from tests.conftest import consume

pytestmark = pytest.mark.integration
M = 60_000


def volume(symbol: str, start: int, count: int) -> dict[str, Any]:
    return {
        "symbol": symbol, "window_start_ms": start, "window_end_ms": start + M,
        "window_size_ms": M, "window_advance_ms": M, "message_count": count,
        "distinct_users": count, "bullish": 1, "bearish": 0, "unlabelled": count - 1,
        "revision": 0, "emitted_at_ms": start + M,
    }  # fmt: skip


def spike(symbol: str, start: int) -> dict[str, Any]:
    return {
        "symbol": symbol, "window_start_ms": start, "window_end_ms": start + M,
        "window_size_ms": M, "count": 50, "expected_count": 5.0, "score": 9.0,
        "p_value": None, "ratio": 10.0, "bullish_ratio": None, "sample_message_ids": [7],
        "severity": "HIGH", "detected_at_ms": start + M,
    }  # fmt: skip


def publish(settings: Settings, spec: topics.TopicSpec, records: list[dict[str, Any]]) -> None:
    encode = Serde(settings).serializer(spec)
    p = Producer({**settings.kafka_config(), "enable.idempotence": True})
    for r in records:
        p.produce(spec.full_name(settings), encode(r), key=r["symbol"].encode())
    assert p.flush(30) == 0


def test_tail_prints_decoded_json_lines_filtered_by_key(settings: Settings) -> None:
    ensure_topics(settings, [topics.VOLUME])
    records = [volume(s, i * M, 10 + i) for i, s in enumerate(["AAPL", "TSLA", "AAPL", "GME"])]
    publish(settings, topics.VOLUME, records)
    out = io.StringIO()
    options = TailOptions(from_beginning=True, keys=frozenset({"AAPL"}), max_records=5,
                          idle_exit_s=8)  # fmt: skip
    assert tail.run(settings, "pulse.volume", options, out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["value"] for line in lines] == [records[0], records[2]]
    assert {line["key"] for line in lines} == {"AAPL"}
    assert lines[0]["topic"] == topics.VOLUME.full_name(settings)
    out = io.StringIO()
    tail.run(settings, topics.VOLUME.full_name(settings),
             TailOptions(from_beginning=True, max_records=4, value_only=True), out=out)  # fmt: skip
    assert sorted(json.loads(x)["message_count"] for x in out.getvalue().splitlines()) == [
        10, 11, 12, 13
    ]  # fmt: skip


def test_tail_of_an_unknown_topic_is_a_usage_error(settings: Settings) -> None:
    assert tail.run(settings, "no.such.topic") == 2


@dataclass
class Webhook:
    """A local webhook that fails on purpose: 503s, 429s, dropped connections, a 400 for BAD."""

    fail_rate: float = 0.0
    down: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    accepted: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        body = await request.json()
        assert request.headers["Idempotency-Key"] == body["id"]
        if self.down:
            return web.Response(status=503)
        if body["spike"]["symbol"] == "BAD":
            return web.Response(status=400, text="unknown channel")
        roll = self.rng.random()
        if roll < self.fail_rate / 3:
            return web.Response(status=503)
        if roll < 2 * self.fail_rate / 3:
            return web.Response(status=429, headers={"Retry-After": "0"})
        if roll < self.fail_rate:
            assert request.transport is not None
            request.transport.close()  # connection dropped mid-request
            return web.Response(status=500)
        self.accepted[body["id"]] += 1
        return web.json_response({"ok": True})


def alert_settings(settings: Settings) -> Settings:
    return settings.replace(
        app_id=f"alerts-{uuid.uuid4().hex[:8]}", alert_max_attempts=8,
        alert_backoff_s=0.02, alert_backoff_max_s=0.2, alert_timeout_s=5.0,
    )  # fmt: skip


def committed(settings: Settings, group: str) -> dict[int, int]:
    topic = topics.SPIKES.full_name(settings)
    c = Consumer({**settings.kafka_config(), "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.symbol_partitions)]
        return {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
    finally:
        c.close()


def end_offsets(settings: Settings) -> dict[int, int]:
    topic = topics.SPIKES.full_name(settings)
    c = Consumer({**settings.kafka_config(), "group.id": "end-offsets"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(settings.symbol_partitions)
        }
    finally:
        c.close()


async def run_until(alerts: AlertConsumer, done: Any, timeout_s: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(alerts.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not done() and loop.time() < deadline and not task.done():
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_every_spike_reaches_the_flaky_webhook_and_the_undeliverable_one_is_dead_lettered(
    settings: Settings, webhook: Webhook
) -> None:
    settings = alert_settings(settings)
    ensure_topics(settings, [topics.SPIKES, topics.DEAD_LETTER])
    spikes = [spike(f"S{i:02d}", i * M) for i in range(24)] + [spike("BAD", 0)]
    publish(settings, topics.SPIKES, spikes)
    webhook.fail_rate = 0.4
    alerts = AlertConsumer(settings, [webhook.url], rng=random.Random(3))
    await run_until(alerts, lambda: alerts.delivered + alerts.dead_lettered >= 25, 60)

    wanted = {f"{s['symbol']}:{M}:{s['window_start_ms']}" for s in spikes[:-1]}
    assert set(webhook.accepted) == wanted  # every good spike delivered, at least once
    assert webhook.attempts > len(spikes)  # and the webhook did fail along the way
    letters = consume(settings, topics.DEAD_LETTER.full_name(settings), 1, timeout_s=15)
    decoded = Serde(settings).decode(topics.DEAD_LETTER, letters[0].value())
    assert decoded["reason"] == "delivery_failed" and decoded["stage"] == "alerts"
    assert "HTTP 400" in decoded["error"] and "s3cret" not in decoded["error"]
    assert Serde(settings).decode(topics.SPIKES, decoded["raw"])["symbol"] == "BAD"
    assert dict(letters[0].headers())["dlq.reason"] == b"delivery_failed"
    # everything handled, so everything committed
    assert committed(settings, f"{settings.app_id}-alerts") == end_offsets(settings)


async def test_nothing_is_committed_while_the_webhook_is_down_and_it_is_redelivered_later(
    settings: Settings, webhook: Webhook
) -> None:
    settings = alert_settings(settings).replace(alert_max_attempts=10_000)
    ensure_topics(settings, [topics.SPIKES, topics.DEAD_LETTER])
    spikes = [spike(f"D{i}", i * M) for i in range(4)]
    publish(settings, topics.SPIKES, spikes)
    group = f"{settings.app_id}-alerts"

    webhook.down = True
    first = AlertConsumer(settings, [webhook.url])
    await run_until(first, lambda: webhook.attempts >= 10, 40)
    assert webhook.attempts >= 10 and first.delivered == 0
    assert all(offset < 0 for offset in committed(settings, group).values())  # none committed

    webhook.down = False  # the webhook is back: a new consumer of the group picks up
    second = AlertConsumer(settings, [webhook.url])
    await run_until(second, lambda: len(webhook.accepted) >= len(spikes), 40)
    assert len(webhook.accepted) == len(spikes) and second.dead_lettered == 0
    assert committed(settings, group) == end_offsets(settings)


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_pulse_alerts_serves_healthz_readyz_and_its_metrics(
    settings: Settings, webhook: Webhook, tmp_path: Path
) -> None:
    settings = alert_settings(settings)
    ensure_topics(settings, [topics.SPIKES, topics.DEAD_LETTER])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PULSE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "PULSE_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
           "PULSE_TOPIC_PREFIX": settings.topic_prefix, "PULSE_APP_ID": settings.app_id,
           "PULSE_SYMBOL_PARTITIONS": str(settings.symbol_partitions)}  # fmt: skip
    log = tmp_path / "alerts.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pulse.cli", "alerts", "--webhook", webhook.url,
             "--health-port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        publish(settings, topics.SPIKES, [spike("HLTH", 0)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while f"HLTH:{M}:0" not in webhook.accepted:  # the webhook answers on this loop
            assert proc.poll() is None and loop.time() < deadline, log.read_text()[-2000:]
            await asyncio.sleep(0.2)
        code, body = await asyncio.to_thread(_get, port, "/healthz")
        assert (code, json.loads(body)) == (200, {"healthy": True})
        assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200
        code, body = await asyncio.to_thread(_get, port, "/metrics")
        lines = body.decode().splitlines()
        assert code == 200
        label = redact(webhook.url)  # the token in the path stays out of the label
        assert f'pulse_alerts_delivered_total{{webhook="{label}"}} 1.0' in lines, lines
        assert any(line.startswith("pulse_alerts_last_commit_timestamp_seconds ") for line in lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log.read_text()[-2000:]
    assert f"metrics and health on 127.0.0.1:{port}" in log.read_text()  # PULSE_BIND_HOST

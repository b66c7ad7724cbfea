"""The fan-out stage against the real broker and registry: a child process, as deployed.

Raw events in (creates, repeats, destroys with and without body, /sentiment scores, bad
bytes), MentionBatch records out: every mention in its symbol partition, reading marks on
every record, dead letters for what cannot be read, nothing lost across a SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from pulse.lifecycle import Child
from pulse.processors.mentions import (
    ANY_SYMBOL,
    Mention,
    from_columns,
    mentions_of_message,
    mentions_of_sentiment,
    symbol_partition,
)
from pulse.schemas import topics
from pulse.schemas.admin import ensure_topics
from pulse.schemas.serde import Serde, frame_header
from pulse.settings import Settings
from tests.conftest import consume, records_in
from tests.support.harness import (
    RawWriter,
    message_event,
    sentiment_event,
    settings_env,
    wait_fanned_out,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SYMS = ["AAPL", "TSLA", "SPY", "NVDA", "AMD", "BTC.X", "GME", "AMC", "F", "QQQ", "PLTR", "NIO"]
T0 = 1_767_225_600_000


class FanOutProcess(Child):
    """``pulse worker --stage fan-out`` as a child, its log in a file (started at once)."""

    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "pulse.cli", "worker", "--stage", "fan-out",
                "--no-prepare", "--port", "-1", *args]  # fmt: skip
        super().__init__("fan-out", argv, env=env, log_path=log_path, cwd=ROOT)
        self.start()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        return super().stop(timeout_s)

    def log(self) -> str:
        return self.tail(200)[-4000:]


def fan_out_settings(settings: Settings) -> Settings:
    """Default partition counts (6 raw × 6 symbol), short idle timers; the topics created."""
    # an app id of its own: the consumer group (<app id>-fan-out) is not namespaced by the
    # topic prefix, and tests sharing one would keep rebalancing each other
    s = settings.replace(
        raw_partitions=6,
        symbol_partitions=6,
        raw_idle_ms=500,
        idle_close_s=3.0,
        app_id=f"fanout-test-{uuid.uuid4().hex[:8]}",
    )
    ensure_topics(
        s, (topics.MESSAGES, topics.RAW_SENTIMENT, topics.MENTION_BATCHES, topics.DEAD_LETTER)
    )
    return s


@pytest.fixture
def fo_settings(settings: Settings) -> Settings:
    """:func:`fan_out_settings` on the shared broker."""
    return fan_out_settings(settings)


@pytest.fixture
def fan_out(fo_settings: Settings, tmp_path: Path) -> Iterator[list[FanOutProcess]]:
    started: list[FanOutProcess] = []
    yield started
    for proc in started:
        proc.stop()


def start(
    fan_out: list[FanOutProcess], settings: Settings, tmp_path: Path, *args: str
) -> FanOutProcess:
    proc = FanOutProcess(settings, tmp_path / f"fanout-{len(fan_out)}.log", *args)
    fan_out.append(proc)
    return proc


def read_batches(
    settings: Settings, *, idle_s: float = 3.0, timeout_s: float = 60.0, read_committed: bool = True
) -> list[tuple[int, bytes, dict[str, Any]]]:
    """(partition, key, decoded MentionBatch) of every record on the topic, in order."""
    decode = Serde(settings).deserializer(topics.MENTION_BATCHES)
    c = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"read-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    c.subscribe([topics.MENTION_BATCHES.full_name(settings)])
    out: list[tuple[int, bytes, dict[str, Any]]] = []
    start_t = last = time.monotonic()
    try:
        while time.monotonic() - start_t < timeout_s and time.monotonic() - last < idle_s:
            for msg in c.consume(1_000, 0.5):
                if msg.error() is None:
                    out.append((msg.partition(), msg.key(), decode(msg.value())))
                    last = time.monotonic()
    finally:
        c.close()
    return out


def expected(events: list[tuple[str, dict[str, Any]]], n: int) -> Counter[tuple[int, Mention]]:
    want: Counter[tuple[int, Mention]] = Counter()
    for kind, event in events:
        mentions = mentions_of_message(event) if kind == "m" else mentions_of_sentiment(event)
        for m in mentions:
            parts = range(n) if m.symbol == ANY_SYMBOL else [symbol_partition(m.symbol, n)]
            want.update((p, m) for p in parts)
    return want


def got_mentions(batches: list[tuple[int, bytes, dict[str, Any]]]) -> Counter[tuple[int, Mention]]:
    return Counter((p, m) for p, _, record in batches for m in from_columns(record))


def scripted_events() -> list[tuple[str, dict[str, Any]]]:
    """Creates, repeated creates, destroys with and without body, /sentiment scores."""
    events: list[tuple[str, dict[str, Any]]] = []
    for i in range(300):
        syms = [SYMS[i % len(SYMS)], SYMS[(i * 7) % len(SYMS)]]
        events.append(
            (
                "m",
                message_event(
                    i + 1,
                    T0 + i * 1_000,
                    syms,
                    user_id=i % 13,
                    sentiment=("Bullish", "Bearish", None)[i % 3],
                ),
            )
        )
    events += [events[i] for i in range(0, 60, 3)]  # repeats (a producer resumed)
    events += [
        (
            "m",
            message_event(
                i + 1,
                T0 + i * 1_000,
                [SYMS[i % len(SYMS)]],
                action="destroy",
                event_time_ms=T0 + 400_000,
            ),
        )
        for i in range(100, 110)
    ]
    events += [
        (
            "m",
            message_event(
                i + 1,
                T0 + i * 1_000,
                [],
                action="destroy",
                body=False,
                event_time_ms=T0 + 401_000 + i,
            ),
        )
        for i in range(110, 120)
    ]
    events += [
        ("s", sentiment_event(i + 1, T0 + i * 1_000, [SYMS[i % 5]], (i % 9 - 4) / 4))
        for i in range(0, 300, 10)
    ]
    return events


def write(settings: Settings, events: list[tuple[str, dict[str, Any]]]) -> None:
    writer = RawWriter(settings)
    for kind, event in events:
        writer.send(topics.MESSAGES if kind == "m" else topics.RAW_SENTIMENT, event)
    writer.flush()


def raw_ends(settings: Settings) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) → (high watermark, highest event time) of both raw topics."""
    serde = Serde(settings)
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for spec, field_of in (
        (
            topics.MESSAGES,
            lambda r: r["message"]["created_at_ms"] if r["message"] else r["event_time_ms"],
        ),
        (topics.RAW_SENTIMENT, lambda r: r["created_at_ms"]),
    ):
        name = spec.full_name(settings)
        decode = serde.deserializer(spec)
        for p in range(spec.partitions(settings)):
            out[(name, p)] = (0, -1)
        c = Consumer({**settings.kafka_config(), "group.id": "x"})
        for p in range(spec.partitions(settings)):
            out[(name, p)] = (c.get_watermark_offsets(TopicPartition(name, p), 10)[1], -1)
        c.close()
        for msg in consume(
            settings, name, sum(h for (t, _), (h, _) in out.items() if t == name), 30.0
        ):
            key = (name, msg.partition())
            try:
                t = field_of(decode(msg.value()))
            except Exception:  # noqa: BLE001 - bad bytes have no event time
                continue
            out[key] = (out[key][0], max(out[key][1], t))
    return out


def test_every_mention_reaches_its_partition_with_marks_then_idle_and_quiet(
    fo_settings: Settings, fan_out: list[FanOutProcess], tmp_path: Path
) -> None:
    s = fo_settings
    events = scripted_events()
    write(s, events)
    proc = start(fan_out, s, tmp_path, "--port", "0")
    wait_fanned_out(s, timeout_s=90)
    # quiet needs idle_close_s (3 s) without records after the last read
    time.sleep(s.idle_close_s + 2)
    batches = read_batches(s)
    port = re.search(r"metrics and health on [\d.]+:(\d+)", proc.log())
    assert port, proc.log()
    base = f"http://127.0.0.1:{port.group(1)}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
        assert resp.status == 200 and json.loads(resp.read())["healthy"]
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    n_messages = sum(1 for kind, _ in events if kind == "m")
    assert (
        f'pulse_fanout_events_in_total{{topic="{topics.MESSAGES.full_name(s)}"}} '
        f"{float(n_messages)}"
    ) in text
    assert proc.stop() == 0, proc.log()
    assert got_mentions(batches) == expected(events, 6)
    assert {p for p, _, _ in batches} == set(range(6))
    assert all(key == str(p).encode() for p, key, _ in batches)
    assert all(r["raw_partitions"] == 12 for _, _, r in batches)
    assert all(len(r["progress"]) == 12 for _, _, r in batches)
    ends = raw_ends(s)
    for p in range(6):
        last = [r for q, _, r in batches if q == p][-1]["progress"]
        assert all(m["idle"] and m["quiet"] for m in last), (p, last)
        assert {(m["topic"], m["partition"]): (m["offset"], m["event_ms"]) for m in last} == ends
    # marks never go back within a partition's records
    for p in range(6):
        seen: dict[tuple[str, int], int] = {}
        for q, _, r in batches:
            for m in r["progress"] if q == p else []:
                tp = (m["topic"], m["partition"])
                assert m["offset"] >= seen.get(tp, -1)
                seen[tp] = m["offset"]


def test_bad_records_become_dead_letters_and_the_rest_flows(
    fo_settings: Settings, fan_out: list[FanOutProcess], tmp_path: Path
) -> None:
    s = fo_settings
    events = scripted_events()[:100]
    writer = RawWriter(s)
    garbage = b"\x00not avro at all"
    wrong_id = frame_header(987_654_321) + b"\x00\x02\x04"
    plain_json = b'{"action": "create"}'
    # the registered schema, the body cut short: the native reader's refusal
    first_message = next(event for kind, event in events if kind == "m")
    truncated = Serde(s).serializer(topics.MESSAGES)(first_message)[:-3]
    for i, (kind, event) in enumerate(events):
        writer.send(topics.MESSAGES if kind == "m" else topics.RAW_SENTIMENT, event)
        if i == 20:
            writer.send_bytes(topics.MESSAGES, b"g", garbage)
            writer.send_bytes(topics.RAW_SENTIMENT, b"w", wrong_id)
        if i == 50:
            writer.send_bytes(topics.MESSAGES, b"j", plain_json)
            writer.send_bytes(topics.MESSAGES, b"t", truncated)
    writer.flush()
    start(fan_out, s, tmp_path)
    wait_fanned_out(s, timeout_s=90)
    batches = read_batches(s)
    assert got_mentions(batches) == expected(events, 6)
    decode = Serde(s).deserializer(topics.DEAD_LETTER)
    # every dead letter is flushed before the raw offsets are committed: the topic is whole
    dead_letters = topics.DEAD_LETTER.full_name(s)
    dead = consume(s, dead_letters, records_in(s, dead_letters), 20.0)
    assert len(dead) == 4
    got = {bytes(decode(m.value())["raw"]): (decode(m.value()), dict(m.headers())) for m in dead}
    assert set(got) == {garbage, wrong_id, plain_json, truncated}
    assert "truncated" in got[truncated][0]["error"]
    for raw, (record, headers) in got.items():
        assert record["reason"] == "decode_failed" and record["stage"] == "fan-out"
        assert headers["dlq.reason"] == b"decode_failed"
        assert record["source_offset"] is not None
        topic = topics.RAW_SENTIMENT if raw == wrong_id else topics.MESSAGES
        assert record["source_topic"] == topic.full_name(s)


def output_records(settings: Settings) -> int:
    return records_in(settings, topics.MENTION_BATCHES.full_name(settings))


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_sigkill_mid_run_then_restart_loses_nothing(
    fo_settings: Settings, fan_out: list[FanOutProcess], tmp_path: Path, guarantee: str
) -> None:
    s = fo_settings.replace(processing_guarantee=guarantee)
    events = [
        ("m", message_event(i + 1, T0 + i * 10, [SYMS[i % 12], SYMS[i * 5 % 12]], user_id=i % 50))
        for i in range(20_000)
    ]
    write(s, events)
    first = start(fan_out, s, tmp_path, "--batch-size", "200", "--instance-id", "a")
    assert wait_until(lambda: output_records(s) > 150, 60, 0.05), first.log()
    first.kill()
    start(fan_out, s, tmp_path, "--batch-size", "2000", "--instance-id", "a")
    wait_fanned_out(s, timeout_s=120)
    got = got_mentions(read_batches(s, read_committed=True))
    want = expected(events, 6)
    if guarantee == "exactly_once":
        assert got == want
    else:
        assert not want - got  # every mention, repeats allowed
        assert set(got) == set(want)


@pytest.fixture
def private_broker(settings: Settings) -> Iterator[tuple[Any, Settings]]:
    """A throwaway broker of this test's own (stopping the shared one would break every
    other test); the shared registry."""
    from pulse.local.stack import LocalStack, free_ports

    stack = LocalStack(settings.local_home_path, name=f"fanout-{os.getpid()}", ports=free_ports())
    try:
        endpoints = stack.up(timeout_s=240, registry=False)
        yield stack, settings.replace(bootstrap_servers=endpoints.bootstrap_servers)
    finally:
        stack.destroy()


def batches_with_time(settings: Settings) -> list[tuple[int, int, dict[str, Any]]]:
    """(partition, produce time ms, record) of every MentionBatch record."""
    decode = Serde(settings).deserializer(topics.MENTION_BATCHES)
    name = topics.MENTION_BATCHES.full_name(settings)
    total = output_records(settings)
    return [
        (m.partition(), m.timestamp()[1], decode(m.value()))
        for m in consume(settings, name, total, 60.0)
    ]


def test_broker_outage_is_not_a_quiet_stream(
    private_broker: tuple[Any, Settings], fan_out: list[FanOutProcess], tmp_path: Path
) -> None:
    stack, base = private_broker
    s = fan_out_settings(base)
    first = [("m", message_event(i + 1, T0 + i * 1_000, [SYMS[i % 12]])) for i in range(300)]
    write(s, first)
    proc = start(fan_out, s, tmp_path)
    wait_fanned_out(s, timeout_s=120)
    time.sleep(s.idle_close_s + 2)  # everything quiet before the outage
    down_ms = int(time.time() * 1000)
    stack.down(timeout_s=60, only="kafka")
    time.sleep(20)  # more than six idle closes
    assert proc.proc.poll() is None, proc.log()
    up_ms = int(time.time() * 1000)
    stack.up(timeout_s=240, registry=False)
    second = [("m", message_event(i + 1, T0 + i * 1_000, [SYMS[i % 12]])) for i in range(300, 600)]
    write(s, second)
    wait_fanned_out(s, timeout_s=180)

    def all_quiet_again() -> bool:
        last = {p: r for p, _, r in batches_with_time(s)}
        return len(last) == 6 and all(m["quiet"] for r in last.values() for m in r["progress"])

    assert wait_until(all_quiet_again, 60, 2.0), proc.log()
    assert proc.proc.poll() is None, proc.log()
    records = batches_with_time(s)
    assert proc.stop() == 0, proc.log()
    got = Counter((p, m) for p, _, r in records for m in from_columns(r))
    assert not expected(first + second, 6) - got  # every mention, repeats allowed
    before = [r for _, t, r in records if t < down_ms]
    assert any(all(m["quiet"] for m in r["progress"]) for r in before), "quiet before"
    # what the fan-out said while the broker was away: its marks do not change while quiet,
    # so whatever it wrote then is the outage verdict (detected as the broker shut down)
    during = [r for _, t, r in records if down_ms <= t <= up_ms]
    assert during, "the outage verdict should have been written (delivered after it)"
    assert not any(m["idle"] or m["quiet"] for r in during for m in r["progress"])
    last = {p: r for p, _, r in records}
    assert all(m["quiet"] for r in last.values() for m in r["progress"])

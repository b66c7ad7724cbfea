"""A broker outage is not a quiet stream: the broker of a private instance is SIGKILLed under a
live-rate stream, both stages running, and started again ~45 s later.

Neither stage exits; no window is closed while the broker is unreachable (the wall-clock close
time rides on every volume record in the ``pulse.closed_at_ms`` header); and afterwards every
message on the raw topic is counted in its 1m window, including those the writer held back
during the outage and delivered late. A second test kills the broker for 25 s while
the signals stage is busy with a backlog, so a batch's records wait for the broker.

Stopping the shared broker would break every other test, so this one starts a private,
throwaway broker through the local stack (``pulse/local/``) and uses the shared registry.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from pulse.local.stack import LocalStack
from pulse.processors.agents import CLOSED_AT_HEADER
from pulse.processors.worker import prepare
from pulse.schemas import topics
from pulse.schemas.serde import Serde
from pulse.settings import Settings
from tests.integration.test_processors_e2e import worker_settings
from tests.integration.test_processors_recovery import events_in, ready, wait_windows
from tests.support.harness import (
    RawWriter,
    WorkerProcess,
    fanned_out,
    message_event,
    read_records,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

M = 60_000
RATE = 5.0  # messages/s, created_at = wall clock
SYMBOLS = ["AAPL", "TSLA", "SPY", "NVDA", "AMD", "GME"]
# With the restart (~10 s) the broker is away about a minute: longer than the idle close (10 s
# by default), the grace (30 s) and the 23 s into an outage at which the original defect
# showed (a 10 s committed() timeout inside faust).
DOWN_S = 45.0
# Live windows close at about second 31 of a wall-clock minute (end + 30 s grace). The broker
# is killed in the rest of that minute, from 7 s after the close: no close is in flight at the
# kill, and the outage spans the next minute's start and its close moment.
KILL_AT_SECOND = (38, 60)
STREAM_BEFORE_KILL_S = 10.0  # the live stream flows through both stages before the kill


def live_settings(base: Settings, tmp_path: Path, **changes: Any) -> Settings:
    """A worker of its own with default grace and idle close, 1m windows only: a live-rate
    test spans minutes, not hours."""
    return worker_settings(
        base,
        tmp_path,
        windows="1m",
        hopping_windows="",
        spike_windows="1m",
        surge_window="",
        **changes,
    )


def start_stages(settings: Settings, tmp_path: Path) -> list[WorkerProcess]:
    """Topics and schemas, then the fan-out and signals stages as two processes."""
    prepare(settings)
    return [
        WorkerProcess(settings, tmp_path / f"{stage}.log", stage=stage).start()
        for stage in ("fan-out", "signals")
    ]


def kill_kafka(stack: LocalStack) -> None:
    """SIGKILL the broker (its whole process group): no clean shutdown, no goodbye."""
    pid = stack._load_state()["kafka_pid"]
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not stack.running()["kafka"], 30, interval_s=0.1)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    assert not stack.running()["kafka"]


class LiveWriter(threading.Thread):
    """A few messages a second over several symbols, created_at = now; keeps writing through
    the outage (the producer holds them back and delivers them when the broker is back)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.writer = RawWriter(settings)
        self.stopping = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(11)
        try:
            while not self.stopping.wait(1 / RATE):
                self.sent += 1
                picked = sorted(set(rng.choices(SYMBOLS, k=rng.choice((1, 1, 2)))))
                label = rng.choice(("Bullish", "Bearish", None))
                self.writer.send(
                    topics.MESSAGES,
                    message_event(
                        self.sent, int(time.time() * 1000), picked, rng.randrange(1, 40), label
                    ),
                )
            self.writer.producer.flush(120)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> None:
        self.stopping.set()
        self.join(150)
        assert not self.is_alive() and self.error is None, repr(self.error)
        assert len(self.writer.producer) == 0, "raw messages left undelivered"


def volumes_with_close_times(
    settings: Settings, expected: int, timeout_s: float
) -> list[tuple[dict[str, Any], int]]:
    """(volume record, its ``pulse.closed_at_ms``), once ``expected`` records are read."""
    decode = Serde(settings).deserializer(topics.VOLUME)
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topics.VOLUME.full_name(settings)])
    out: list[tuple[dict[str, Any], int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            closed_at = dict(msg.headers() or [])[CLOSED_AT_HEADER]
            out.append((decode(msg.value()), int(closed_at)))
    finally:
        consumer.close()
    return out


def raw_windows(settings: Settings, sent: int) -> dict[tuple[str, int], int]:
    """(symbol, 1m window start) → messages, tallied from the ``sent`` raw messages (the
    writer is idempotent: each is on the topic once)."""
    counted: dict[tuple[str, int], set[int]] = defaultdict(set)
    for event in read_records(settings, topics.MESSAGES, expected=sent, timeout_s=60):
        t = event["message"]["created_at_ms"]
        for ref in event["message"]["symbols"]:
            counted[(ref["symbol"], t - t % M)].add(event["message_id"])
    return {key: len(ids) for key, ids in counted.items()}


def wait_for_kill_moment(not_before: float) -> None:
    """Until ``time.monotonic()`` is ``not_before`` or later, at a second in KILL_AT_SECOND."""
    while (
        time.monotonic() < not_before
        or not KILL_AT_SECOND[0] <= time.time() % 60 < KILL_AT_SECOND[1]
    ):
        time.sleep(0.2)


def test_broker_killed_under_a_live_stream_closes_nothing_and_loses_nothing(
    private_broker: tuple[LocalStack, Settings], tmp_path: Path
) -> None:
    stack, base = private_broker
    s = live_settings(base, tmp_path)
    stages = start_stages(s, tmp_path)
    writer = LiveWriter(s)
    try:
        assert wait_until(lambda: ready(s.web_port), 120), stages[1].log_tail()
        writer.start()
        wait_for_kill_moment(not_before=time.monotonic() + STREAM_BEFORE_KILL_S)
        down_at = int(time.time() * 1000)
        kill_kafka(stack)
        exits = []
        while time.time() * 1000 < down_at + DOWN_S * 1000:  # both stages ride it out
            exits += [p.log_path.name for p in stages if not p.alive()]
            time.sleep(1)
        stack.up(timeout_s=120, registry=False)
        back_at = int(time.time() * 1000)
        time.sleep(10)  # the stream goes on after the outage
        writer.finish()
        expected = raw_windows(s, writer.sent)
        assert writer.sent >= RATE * (DOWN_S + 20) and sum(expected.values()) >= writer.sent
        # the last windows close by the idle close once the stream has stopped
        got = volumes_with_close_times(s, len(expected), timeout_s=120)
        exits += [p.log_path.name for p in stages if not p.alive()]
        assert not exits, "\n".join(p.log_tail() for p in stages)
    finally:
        writer.stopping.set()
        for p in stages:
            p.stop()
    closed_in_outage = [
        (v["symbol"], v["window_start_ms"], at) for v, at in got if down_at <= at <= back_at
    ]
    assert not closed_in_outage, f"closed while the broker was down: {closed_in_outage}"
    windows = {(v["symbol"], v["window_start_ms"]): v["message_count"] for v, _ in got}
    assert len(windows) == len(got), "a window was emitted twice"
    assert windows == expected, (  # the late events are read only to describe a failure
        f"{len(read_records(s, topics.LATE_EVENTS, idle_s=2, timeout_s=6))} late events; differ: "
        f"{ {k: (windows.get(k), n) for k, n in expected.items() if windows.get(k) != n} }"
    )
    assert any(down_at <= start < back_at for _, start in windows), "no window in the outage"


def caught_up(settings: Settings) -> bool:
    try:
        return fanned_out(settings)
    except Exception:  # noqa: BLE001 - a fresh broker's coordinator may not be ready yet
        return False


# Before the fix in processors/agents.py (Sink._flush_producer) the signals stage took a flush
# still waiting after 60 s for a failure and exited (70) with "15303 records unsent, delivery
# errors: []", although librdkafka was still retrying them. The flush now waits in slices of
# 10 s for as long as it takes: an outage of 25 s, over two slices, shows it (70 s did, in
# the loops that found the defect; shorter here to keep the suite's time).
def test_broker_killed_while_signals_is_busy(
    private_broker: tuple[LocalStack, Settings], tmp_path: Path
) -> None:
    stack, base = private_broker
    s = live_settings(base, tmp_path)
    prepare(s)
    writer = RawWriter(s)
    t0, expected = 1_767_225_600_000, defaultdict(int)
    for i in range(100_000):  # 33 minutes of event time, 60 symbols
        t, symbol = t0 + i * 20, f"B{i % 60:02d}"
        writer.send(topics.MESSAGES, message_event(i + 1, t, [symbol], i % 97))
        expected[(symbol, t - t % M)] += 1
    writer.flush()
    fan_out = WorkerProcess(s, tmp_path / "fan-out.log", stage="fan-out").start()
    signals_ = WorkerProcess(s, tmp_path / "signals.log", stage="signals")
    stages = [fan_out, signals_]
    try:
        assert wait_until(lambda: caught_up(s), 180, interval_s=1), fan_out.log_tail()
        signals_.start()

        def busy() -> bool:
            try:
                return events_in(s.web_port) > 0
            except OSError:
                return False

        assert wait_until(busy, 120, interval_s=0.1), signals_.log_tail()
        kill_kafka(stack)  # the signals stage is mid-backlog: a batch's records wait
        assert not wait_until(lambda: not all(p.alive() for p in stages), 25, interval_s=1), (
            "\n".join(p.log_tail() for p in stages)
        )
        stack.up(timeout_s=120, registry=False)
        got = wait_windows(s, len(expected), timeout_s=180)  # (a repeat is possible)
        assert all(p.alive() for p in stages), "\n".join(p.log_tail() for p in stages)
    finally:
        for p in stages:
            p.stop()
    assert "records not delivered after" in signals_.log_path.read_text(errors="replace")
    windows: dict[tuple[str, int], set[int]] = defaultdict(set)
    for v in got:
        windows[(v["symbol"], v["window_start_ms"])].add(v["message_count"])
    assert windows == {k: {n} for k, n in expected.items()}

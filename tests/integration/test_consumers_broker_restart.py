"""The broker restarts (down for 15 s) under a running board reader, ``pulse tail`` and
``pulse alerts``: each keeps running and shows or delivers what is produced afterwards.

Stopping the shared broker would break every other test, so this one starts a private,
throwaway broker through the local stack (``pulse/local/``) and uses the shared registry.
``pulse tail`` and ``pulse alerts`` run as the real commands, in processes of their own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pulse.consumers.board import BoardReader
from pulse.local.stack import LocalStack
from pulse.schemas import topics
from pulse.schemas.admin import ensure_topics
from pulse.settings import Settings
from tests.integration.test_consumers import M, Webhook, publish, spike, volume

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DOWN_S = 15.0


def pulse(argv: list[str], settings: Settings, log: Path, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "PULSE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PULSE_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "PULSE_TOPIC_PREFIX": settings.topic_prefix,
        "PULSE_SYMBOL_PARTITIONS": str(settings.symbol_partitions),
        **env,
    }
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "pulse.cli", *argv], cwd=ROOT, env=environ,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


class BoardThread:
    """The board's reader, polled from a thread as `pulse board` does from its main loop."""

    def __init__(self, settings: Settings) -> None:
        self.reader = BoardReader(settings, window_ms=M, lookback_s=3 * 365 * 86400)
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.reader.poll(0.25)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc
        finally:
            self.reader.close()

    def spiked(self) -> set[str]:
        return {s["symbol"] for s in self.reader.board.spikes}


def records(settings: Settings, symbols: list[str], start: int) -> None:
    publish(settings, topics.VOLUME, [volume(s, start, 10) for s in symbols])
    publish(settings, topics.SPIKES, [spike(s, start) for s in symbols])


async def wait_for(what: str, done: Any, timeout_s: float, alive: list[Any]) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        for proc in alive:
            assert proc.poll() is None, f"{what}: a reader exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)


def tailed(log: Path) -> set[str]:
    return {line.split('"key":"')[1].split('"')[0] for line in log.read_text().splitlines()
            if line.startswith('{"topic"')}  # fmt: skip


async def test_readers_ride_out_a_broker_restart(
    private_broker: tuple[LocalStack, Settings], webhook: Webhook, tmp_path: Path
) -> None:
    stack, settings = private_broker
    ensure_topics(
        settings, [topics.VOLUME, topics.SENTIMENT_WINDOWS, topics.SPIKES, topics.DEAD_LETTER]
    )
    before, after = ["AAA", "BBB", "CCC"], ["XXX", "YYY", "ZZZ"]
    tail_log, alerts_log = tmp_path / "tail.log", tmp_path / "alerts.log"
    tail = pulse(["tail", "pulse.spikes", "--from-beginning"], settings, tail_log)
    alerts = pulse(["alerts", "--webhook", webhook.url, "--health-port", "-1"], settings,
                   alerts_log, PULSE_APP_ID=f"restart-{uuid.uuid4().hex[:8]}",
                   PULSE_ALERT_BACKOFF_S="0.05", PULSE_ALERT_BACKOFF_MAX_S="0.5")  # fmt: skip
    board = BoardThread(settings)
    procs = [tail, alerts]
    ids = lambda syms: {f"{s}:{M}:{0}" for s in syms}  # noqa: E731
    try:
        records(settings, before, 0)
        await wait_for("records before the restart",
                       lambda: tailed(tail_log) >= set(before) and set(webhook.accepted)
                       >= ids(before) and board.spiked() >= set(before), 90, procs)  # fmt: skip

        await asyncio.to_thread(stack.down, 60, "kafka")
        down_until = time.monotonic() + DOWN_S
        while time.monotonic() < down_until:  # nobody exits while the broker is away
            assert tail.poll() is None and alerts.poll() is None and board.failure is None
            await asyncio.sleep(0.5)
        # and the board says why nothing moves
        assert (board.reader.waiting() or "").startswith("Kafka unreachable, retrying")
        await asyncio.to_thread(stack.up, 240, False)

        await asyncio.to_thread(records, settings, after, 0)  # produced after the restart
        await wait_for("records after the restart",
                       lambda: tailed(tail_log) >= set(after) and set(webhook.accepted)
                       >= ids(after) and board.spiked() >= set(after), 120, procs)  # fmt: skip
        assert board.failure is None and board.thread.is_alive()
        assert board.reader.waiting() is None  # back: windows shown, nothing awaited
    finally:
        board.stop.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = [proc.wait(30) for proc in procs]
        board.thread.join(10)
    assert codes == [0, 0], (tail_log.read_text()[-2000:], alerts_log.read_text()[-2000:])
    # the restart was seen, and logged as something to wait out, not an error to die of
    logs = tail_log.read_text() + alerts_log.read_text()
    assert "retrying" in logs, logs[-3000:]
    assert "s3cret" not in alerts_log.read_text()

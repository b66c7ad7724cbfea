"""A quiet spell of a live stream is not its end: `pulse worker` with the default partitions,
grace and idle close, a stream whose ``created_at`` is the wall clock.

The stream runs across a minute boundary, then stops for longer than the idle close. The idle
close closes the minute that is over by the clock and leaves the running one open; the stream
resumes within that minute, and its messages count there: no late events, every window equals
a tally of the raw topic.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pulse.schemas import topics
from pulse.settings import Settings
from tests.integration.test_processors_broker_outage import live_settings, raw_windows, start_stages
from tests.integration.test_processors_recovery import ready
from tests.support.harness import RawWriter, message_event, read_records, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

M = 60_000
SYMBOLS = ["AAPL", "TSLA"]


def now_ms() -> int:
    return int(time.time() * 1000)


def write_until(writer: RawWriter, first_id: int, until_ms: int) -> int:
    """Messages at 5/s, created now, until ``until_ms``; returns the next message id."""
    message_id = first_id
    while now_ms() < until_ms:
        writer.send(topics.MESSAGES, message_event(message_id, now_ms(), SYMBOLS, message_id))
        message_id += 1
        time.sleep(0.2)
    writer.flush()
    return message_id


def volumes_by_window(settings: Settings) -> dict[tuple[str, int], int]:
    records = read_records(settings, topics.VOLUME, idle_s=1, timeout_s=5)
    return {(v["symbol"], v["window_start_ms"]): v["message_count"] for v in records}


def test_a_quiet_spell_closes_what_is_over_and_the_stream_resumes_in_the_running_window(
    settings: Settings, tmp_path: Path
) -> None:
    s = live_settings(settings, tmp_path, raw_partitions=6, symbol_partitions=6)
    assert (s.grace_ms, s.idle_close_s) == (30_000, 10.0)  # the defaults
    stages = start_stages(s, tmp_path)
    writer = RawWriter(s)
    try:
        assert wait_until(lambda: ready(s.web_port), 120), stages[1].log_tail()
        assert wait_until(lambda: 45_000 <= now_ms() % M < 48_000, 70, 0.1)
        running = now_ms() - now_ms() % M + M  # the minute the stream stops in
        over = running - M
        next_id = write_until(writer, 1, running + 4_000)
        # quiet: the minute before is over by the clock (its end + grace) and closes; the
        # running one stays open
        assert wait_until(lambda: (SYMBOLS[0], over) in volumes_by_window(s), 60, 1.0)
        assert now_ms() < running + M
        assert not [key for key in volumes_by_window(s) if key[1] == running]
        # the stream resumes in the running minute
        last_id = write_until(writer, next_id, max(now_ms(), running + 40_000) + 3_000)
        assert now_ms() < running + M and last_id > next_id
        expected = raw_windows(s, last_id - 1)
        assert {start for _, start in expected} == {over, running}
        assert wait_until(lambda: volumes_by_window(s) == expected, 120, 2.0), (
            volumes_by_window(s),
            expected,
            stages[1].log_tail(),
        )
        assert all(p.alive() for p in stages)
    finally:
        for p in stages:
            p.stop()
    assert read_records(s, topics.LATE_EVENTS, idle_s=1, timeout_s=5) == []

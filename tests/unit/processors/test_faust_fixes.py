"""The faust-streaming workarounds, on faust's own objects (no broker needed)."""

from __future__ import annotations

from collections.abc import Iterator

import faust
import pytest
from faust.transport.consumer import Consumer
from faust.types import TP

from pulse.processors import faust_fixes
from pulse.processors.faust_fixes import keep_queues_on_redundant_resume


def queue_with_records(app: faust.App) -> object:
    queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)  # as a stream's buffer
    for offset in (151, 152, 153):
        queue.put_nowait(offset)
    return queue


def test_faust_itself_drops_queued_records_when_a_running_flow_is_resumed_again() -> None:
    # the defect (faust-streaming #596): if this stops failing, faust fixed it upstream
    app = faust.App("unpatched", broker="kafka://127.0.0.1:1")
    app.flow_control.resume()  # running, as after the changelog part of a recovery
    queue = queue_with_records(app)
    app.flow_control.resume()  # on_recovery_completed's second resume
    assert queue.qsize() == 0


def test_a_second_resume_keeps_what_the_agents_have_not_read_yet() -> None:
    app = faust.App("patched", broker="kafka://127.0.0.1:1")
    keep_queues_on_redundant_resume(app.flow_control)
    keep_queues_on_redundant_resume(app.flow_control)  # idempotent
    app.flow_control.resume()
    queue = queue_with_records(app)
    app.flow_control.resume()
    assert [queue.get_nowait() for _ in range(queue.qsize())] == [151, 152, 153]


def test_a_resume_after_a_rebalance_suspension_still_clears() -> None:
    app = faust.App("patched-suspended", broker="kafka://127.0.0.1:1")
    keep_queues_on_redundant_resume(app.flow_control)
    app.flow_control.resume()
    queue = queue_with_records(app)
    app.flow_control.suspend()  # a rebalance: what was queued belongs to the old generation
    app.flow_control.resume()
    assert queue.qsize() == 0
    assert app.flow_control.is_active()


@pytest.fixture
def unpatched_gaps() -> Iterator[None]:
    """faust's Consumer as shipped, whatever patched it before; restored afterwards."""
    saved = dict(Consumer.__dict__)
    original = saved.get("_pulse_unpatched_add_gap")
    if original is not None:
        Consumer._add_gap = original
        del Consumer._pulse_unpatched_add_gap
    yield
    Consumer._add_gap = saved["_add_gap"]
    if original is not None:
        Consumer._pulse_unpatched_add_gap = original
    elif "_pulse_unpatched_add_gap" in Consumer.__dict__:
        del Consumer._pulse_unpatched_add_gap


async def commit_after_a_marker(app_id: str) -> int | None:
    """Offsets 266-295 read, a transaction marker at 296, then records 297-375 read and
    acked: what faust's consumer would commit next (the fetch loop's own calls)."""
    consumer = faust.App(app_id, broker="kafka://127.0.0.1:1").consumer
    tp = TP("mentions", 0)
    await consumer._add_gap(tp, 295 + 1, 297)  # as _drain_messages: (last read + 1, offset)
    consumer._acked[tp] = list(range(297, 376))
    return consumer._new_offset(tp)


async def test_faust_itself_commits_one_batch_short_after_a_marker(unpatched_gaps) -> None:
    # the defect: if this stops failing, faust fixed it upstream
    assert await commit_after_a_marker("gap-unpatched") == 298


async def test_with_the_fix_the_commit_covers_the_whole_batch(unpatched_gaps) -> None:
    faust_fixes.gaps_exclude_the_record_read()
    faust_fixes.gaps_exclude_the_record_read()  # idempotent
    assert await commit_after_a_marker("gap-patched") == 376

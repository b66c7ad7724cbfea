"""Workarounds for faust-streaming 0.15 defects that lose records; each names its issue.

**Records dropped at the end of a table recovery** (faust-streaming #596). After a rebalance,
``Recovery.on_recovery_completed`` resumes the stream partitions, awaits ``perform_seek()``
(a broker round trip, often hundreds of ms) and only then calls ``app.flow_control.resume()``.
The flow is already running at that point (it was resumed for reading the changelogs), so the
fetcher has been delivering stream records into the agents' queues the whole time, and
``resume()`` clears every managed queue. The cleared records are never read again: faust's
read offset and the fetch position are already past them. Seen here as a takeover where
stage 1 jumped from raw offset 150 to 280, and the stage-2 windows came out a few mentions
short. :func:`keep_queues_on_redundant_resume` makes ``resume()`` of a flow that is not
suspended a no-op; a resume after a real suspension (a rebalance) still clears, which is what
the clearing is for. The records read during the seek may then be delivered once more (the
seek resets faust's read offset); at-least-once already tolerates that.
"""

from __future__ import annotations

from typing import Any


def keep_queues_on_redundant_resume(flow_control: Any) -> None:
    """Patch a ``mode`` ``FlowControlEvent`` (``app.flow_control``) in place; idempotent."""
    if getattr(flow_control, "_pulse_guarded", False):
        return
    resume = flow_control.resume

    def resume_if_suspended() -> None:
        if flow_control.is_active():
            return  # already flowing: clearing now would drop records faust has read past
        resume()

    flow_control.resume = resume_if_suspended
    flow_control._pulse_guarded = True


def gaps_exclude_the_record_read() -> None:
    """**A commit one batch short after a hole in the offsets** (exactly-once inputs have
    holes: transaction markers). faust's fetch loop calls ``_add_gap(tp, last + 1, offset)``
    and ``_add_gap`` marks the range *including* ``offset``, the record just read. That record
    is acked by its stream as well, so it sits twice in the acked list, ``_new_offset`` splits
    the run of consecutive offsets there, and the commit stops just past the hole. In
    exactly-once mode the transaction then commits the batch's outputs with the input offset
    behind them, and a restart emits them again (seen: a window emitted twice). Patched on
    faust's ``Consumer`` class so the hole stops before the record read; idempotent.
    """
    from faust.transport.consumer import Consumer

    if "_pulse_unpatched_add_gap" in Consumer.__dict__:
        return
    add_gap = Consumer._add_gap

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        await add_gap(self, tp, offset_from, offset_to - 1)

    Consumer._pulse_unpatched_add_gap = add_gap  # type: ignore[attr-defined]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]

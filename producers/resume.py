"""Which Firehose position is safe to resume from (pure; Kafka I/O is in firehose.py).

Records are produced in stream order but acknowledged per partition, so acknowledgements can
arrive out of order. :class:`SeqTracker` keeps the *contiguous* prefix: the checkpoint is the last
``seq_id`` such that it and every earlier event are acknowledged. Events after the checkpoint
that did reach Kafka before a crash are found again on restart and skipped (see docs/producers.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


def seq_after(seq: str, checkpoint: str | None) -> bool:
    """True if ``seq`` comes after ``checkpoint`` in stream order.

    Firehose seq_ids are decimal numbers that grow along the stream (compared as integers, they
    are 56 digits); anything else has no known order and counts as "after".
    """
    if checkpoint is None:
        return True
    if seq.isdigit() and checkpoint.isdigit():
        return int(seq) > int(checkpoint)
    return seq != checkpoint


class SeqTracker:
    """Contiguously acknowledged prefix of the seq_ids handed to the producer."""

    def __init__(self, committed: str | None = None, committed_produced_ms: int = 0) -> None:
        self.committed = committed
        self.committed_produced_ms = committed_produced_ms
        self._pending: deque[list[object]] = deque()  # [seq_id, produced_ms, acknowledged]

    def add(self, seq: str, produced_ms: int) -> Callable[[], None]:
        """Register a seq_id about to be produced; call the returned function on its ack."""
        entry: list[object] = [seq, produced_ms, False]
        self._pending.append(entry)

        def acknowledged() -> None:
            entry[2] = True
            while self._pending and self._pending[0][2]:
                seq_id, ms, _ = self._pending.popleft()
                self.committed, self.committed_produced_ms = str(seq_id), int(ms)  # type: ignore[call-overload]

        return acknowledged

    @property
    def pending(self) -> int:
        return len(self._pending)

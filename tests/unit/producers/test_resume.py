"""producers.resume: the checkpoint only moves over a contiguously acknowledged prefix."""

from __future__ import annotations

import pytest

from pulse.producers.resume import SeqTracker, seq_after


@pytest.mark.parametrize(
    "seq, checkpoint, after",
    [
        ("10", None, True),
        ("10", "9", True),
        ("9", "10", False),  # numerically, not as text
        ("10", "10", False),
        (
            "49567487888076093524624994048752032346222860024699420675",
            "49567487888076093524624994048752032346222860024699420674",
            True,
        ),
        ("abc", "abd", True),
        ("abc", "abc", False),
    ],
)
def test_seq_after(seq: str, checkpoint: str | None, after: bool) -> None:
    assert seq_after(seq, checkpoint) is after


def test_tracker_commits_only_contiguous_prefix() -> None:
    t = SeqTracker("0", 0)
    acks = {s: t.add(s, int(s) * 10) for s in ("1", "2", "3", "4")}
    acks["2"]()
    acks["4"]()
    assert (t.committed, t.pending) == ("0", 4)
    acks["1"]()
    assert (t.committed, t.committed_produced_ms, t.pending) == ("2", 20, 2)
    acks["3"]()
    assert (t.committed, t.committed_produced_ms, t.pending) == ("4", 40, 0)


def test_tracker_starts_empty() -> None:
    t = SeqTracker()
    assert t.committed is None
    t.add("5", 1)()
    assert t.committed == "5"

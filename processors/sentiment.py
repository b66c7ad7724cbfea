"""Pure sentiment maths: bullish ratio with a 95 % Wilson score interval, per message and
per user (:func:`user_sentiment`: each user's labels in a window count once)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


@functools.lru_cache(maxsize=16_384)  # two per closed window, of small counts that repeat
def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; None with no trials.

    Unlike ``p ± z·se`` it stays inside [0, 1] and widens for small samples, so a symbol
    with 2 labels does not look as certain as one with 2,000.
    """
    if trials <= 0:
        return None
    p = successes / trials
    z2 = z * z
    denom = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def bullish_ratio(bullish: int, bearish: int) -> float | None:
    """bullish / (bullish + bearish); None when no message carries a label."""
    labelled = bullish + bearish
    return bullish / labelled if labelled else None


@dataclass(frozen=True)
class UserSentiment:
    """A window's sentiment counted per person: each user's labels vote once."""

    bullish: int  # users whose labels in the window are mostly Bullish
    bearish: int  # ... mostly Bearish (a tie abstains)
    ratio: float | None
    low: float | None  # 95 % Wilson interval over users
    high: float | None

    @classmethod
    def of_votes(cls, bullish: int, bearish: int) -> UserSentiment:
        """From the user votes of :func:`user_votes` (what a window result keeps)."""
        interval = wilson_interval(bullish, bullish + bearish)
        return cls(
            bullish,
            bearish,
            bullish_ratio(bullish, bearish),
            interval[0] if interval else None,
            interval[1] if interval else None,
        )

    def record_fields(self) -> dict[str, Any]:
        """The per-user fields of a ``WindowSentiment`` (window_sentiment.avsc)."""
        return {
            "user_bullish": self.bullish,
            "user_bearish": self.bearish,
            "user_bullish_ratio": self.ratio,
            "user_bullish_ratio_low": self.low,
            "user_bullish_ratio_high": self.high,
        }


def user_votes(labels: Iterable[tuple[int | None, str | None]]) -> tuple[int, int]:
    """(bullish users, bearish users) from ``(user_id, label)`` of a window's messages.

    Each user counts once, by the majority of their Bullish/Bearish labels; a tie abstains
    and unlabelled messages do not vote. A message without a user id is its own voter (it
    cannot be matched to anyone).
    """
    tally: dict[object, int] = {}
    anonymous = 0
    for user_id, label in labels:
        vote = 1 if label == "Bullish" else -1 if label == "Bearish" else 0
        if not vote:
            continue
        if user_id is None:
            anonymous += 1
            tally[("anon", anonymous)] = vote
        else:
            tally[user_id] = tally.get(user_id, 0) + vote
    bullish = sum(1 for v in tally.values() if v > 0)
    bearish = sum(1 for v in tally.values() if v < 0)
    return bullish, bearish


def user_sentiment(labels: Iterable[tuple[int | None, str | None]]) -> UserSentiment:
    """Per-user bullish ratio with its Wilson interval (see :func:`user_votes`).

    The per-message interval treats every message as an independent vote; one user giving
    11 of 26 labels makes it too narrow and tilts the ratio. Counting people fixes both.
    """
    return UserSentiment.of_votes(*user_votes(labels))

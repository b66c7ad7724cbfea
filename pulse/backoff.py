"""Reconnect and throttling arithmetic (pure): exponential backoff, rate-limit headers."""

from __future__ import annotations

import random
from collections.abc import Mapping


class Backoff:
    """Exponential backoff with jitter and a cap; ``reset()`` after a healthy connection.

    Delay n is uniform in [d/2, d] with d = min(cap, base * 2**n): never zero (no hammering),
    never synchronised across many clients (jitter).
    """

    def __init__(
        self, base_s: float = 0.5, cap_s: float = 60.0, rng: random.Random | None = None
    ) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        d = min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0


def _number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return None


def retry_after_s(headers: Mapping[str, str], now_s: float) -> float | None:
    """How long a 429 asks us to wait: ``Retry-After`` seconds, else ``X-RateLimit-Reset``."""
    if (after := _number(headers, "Retry-After")) is not None:
        return max(0.0, after)
    if (reset := _number(headers, "X-RateLimit-Reset")) is not None:
        return max(0.0, reset - now_s)
    return None


def throttle_s(headers: Mapping[str, str], now_s: float, min_interval_s: float) -> float:
    """Pause before the next request so the remaining budget lasts until the window resets.

    With ``X-RateLimit-Remaining: 0`` wait for the reset; otherwise spread the remaining calls
    evenly over the time left, never faster than ``min_interval_s``.
    """
    remaining = _number(headers, "X-RateLimit-Remaining")
    reset = _number(headers, "X-RateLimit-Reset")
    if remaining is None or reset is None:
        return min_interval_s
    left = max(0.0, reset - now_s)
    if remaining <= 0:
        return max(min_interval_s, left)
    return max(min_interval_s, left / remaining)

"""Durations as people write them (``30s``, ``5m``, ``1h``, ``1d``) ↔ milliseconds.

One parser for every place a duration is read: window sizes and spike/surge settings
(``PULSE_WINDOWS``, ``PULSE_SPIKE_WINDOWS``, ``PULSE_SURGE_*``) and the board's ``--window``.
A bare number is milliseconds, as the settings have always accepted.
"""

from __future__ import annotations

import re

UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"\s*(\d+)\s*(ms|s|m|h|d)?\s*")


def parse_duration_ms(text: str) -> int:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"`` or plain milliseconds → ms.

    :raises ValueError: anything else (a unit word, a fraction, a sign).
    """
    m = _DURATION.fullmatch(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 5m, 1h, 1d)")
    return int(m.group(1)) * UNITS_MS[m.group(2) or "ms"]


def parse_durations_ms(text: str) -> list[int]:
    """A comma-separated list (``"1m,5m,1h"``) in its order; empty items are skipped."""
    return [parse_duration_ms(part) for part in text.split(",") if part.strip()]


def format_duration_ms(ms: int) -> str:
    """The largest whole unit: 60000 → ``"1m"``, 90000 → ``"90s"``, 1500 → ``"1500ms"``."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % UNITS_MS[unit] == 0:
            return f"{ms // UNITS_MS[unit]}{unit}"
    return f"{ms}ms"

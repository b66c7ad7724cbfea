from __future__ import annotations

import pytest

from pulse.durations import format_duration_ms, parse_duration_ms, parse_durations_ms

M = 60_000
H = 3_600_000


@pytest.mark.parametrize(
    "text, ms",
    [
        ("250ms", 250),
        ("30s", 30_000),
        ("1m", M),
        ("5m", 5 * M),
        ("1h", H),
        ("1d", 24 * H),
        ("2d", 48 * H),
        ("250", 250),  # a bare number is milliseconds (what the settings always took)
        (" 5 m ", 5 * M),
        ("0s", 0),
    ],
)
def test_parse_duration_ms(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["5 minutes", "1.5m", "-1m", "m", "", "1w", "1m30s"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(text)


def test_a_list_keeps_its_order_and_skips_empty_items() -> None:
    assert parse_durations_ms("5m, 1m,,1h,") == [5 * M, M, H]
    assert parse_durations_ms("") == []


@pytest.mark.parametrize(
    "ms, text",
    [(M, "1m"), (90_000, "90s"), (1_500, "1500ms"), (24 * H, "1d"), (25 * H, "25h"), (0, "0ms")],
)
def test_format_duration_ms(ms: int, text: str) -> None:
    assert format_duration_ms(ms) == text


@pytest.mark.parametrize("ms", [250, 30_000, M, 90 * M, H, 24 * H, 3 * 24 * H])
def test_format_then_parse_is_the_identity(ms: int) -> None:
    assert parse_duration_ms(format_duration_ms(ms)) == ms

"""``window_config``: the windows and the spike detectors a worker runs, from settings."""

from __future__ import annotations

import pytest

from pulse.processors.app import window_config
from pulse.processors.detectors import Scored
from pulse.processors.windows import WindowSpec
from pulse.settings import Settings

M, H = 60_000, 3_600_000


def test_defaults_score_five_minute_bursts_and_hourly_surges_of_distinct_users() -> None:
    cfg = window_config(Settings())
    assert cfg.rule is not None
    assert (cfg.rule.burst_sizes_ms, cfg.rule.surge_size_ms) == ((5 * M,), H)
    assert cfg.rule.scored is Scored.USERS and cfg.rule.surge.spans == (1, 3, 6)
    # the hopping hour is not a detector window, the tumbling one is
    assert cfg.detector_specs == {WindowSpec(5 * M, 5 * M), WindowSpec(H, H)}


def test_settings_reach_the_rule() -> None:
    cfg = window_config(
        Settings(
            spike_windows="1m",
            spike_z=3.0,
            spike_scored="messages",
            surge_p=1e-7,
            surge_warmup_days=2,
        )
    )
    assert cfg.rule is not None and cfg.rule.burst_sizes_ms == (M,)
    assert (cfg.rule.burst.z, cfg.rule.scored) == (3.0, Scored.MESSAGES)
    assert (cfg.rule.surge.p, cfg.rule.surge.warmup_days) == (1e-7, 2)


def test_no_surge_detector_when_its_window_is_empty() -> None:
    cfg = window_config(Settings(surge_window=""))
    assert cfg.rule is not None and cfg.rule.surge_size_ms is None
    assert cfg.detector_specs == {WindowSpec(5 * M, 5 * M)}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"spike_windows": "2m"}, "not among the tumbling windows"),
        ({"windows": "1m,5m", "hopping_windows": "1h/5m"}, "not among the tumbling windows"),
        ({"windows": "1m,5m,7h", "surge_window": "7h", "surge_spans": "7h"}, "divide a day"),
        ({"surge_spans": "1h,90m"}, "multiple of it"),
    ],
)
def test_detector_windows_that_cannot_be_scored_are_refused(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        window_config(Settings(**changes))

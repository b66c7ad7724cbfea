"""bench/processors_bench.py: its count of expected windows (how the benchmark tells that the
pipeline emitted everything) agrees with the pure engine, at any event-time spread."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


@pytest.fixture
def bench() -> ModuleType:
    # as `python -m bench.processors_bench` from the repository root imports it
    return importlib.import_module("bench.processors_bench")


@pytest.mark.parametrize("rate", [2_000.0, 3_000 / 86_400])  # a backlog burst; a day
def test_engine_closes_exactly_the_expected_windows(bench: ModuleType, rate: float) -> None:
    run = bench.run_engine(messages=3_000, symbols=200, rate=rate)
    assert run.expected.messages == 3_000
    assert run.volumes == run.expected.volumes > 0
    assert run.late == 0


def test_windows_with_data_counts_every_window_holding_a_pane(bench: ModuleType) -> None:
    from pulse.processors.windows import WindowSpec

    minute, hour = 60_000, 3_600_000
    specs = (WindowSpec(minute, minute), WindowSpec(hour, 5 * minute))
    panes = {"A": {0, minute, 5 * minute}, "B": {hour}}
    # 1m: A 3, B 1. Hopping: A's first two panes share their 12 windows, the third adds one
    # (12 each, 11 shared); B 12
    assert bench.windows_with_data(panes, specs) == {
        f"{minute}/{minute}": 4,
        f"{hour}/{5 * minute}": 13 + 12,
    }

"""Fixtures of the replay tests: ``pulse worker`` with default settings, as a user runs it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from settings import Settings
from tests.integration.test_processors_replay import default_settings, start_worker, stop


@pytest.fixture
def replay_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings of a run of its own (topics, group, state, ports), all else the defaults."""
    return default_settings(settings, tmp_path)


@pytest.fixture
def worker(replay_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``pulse worker`` (both stages) running for the test; its log in ``worker.log``."""
    proc = start_worker(replay_settings, tmp_path / "worker.log")
    yield proc
    stop(proc)

"""``pulse demo`` end to end against the test broker + registry (``--no-stack``): the worker
and the synthetic producer run as children, the board shows symbols, and nothing is left."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from embedded.stack import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment carries ``marker`` (our children inherit the topic prefix)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(
    not (ROOT / "processors" / "app.py").exists(), reason="processors/app.py not there yet"
)
def test_demo_runs_the_pipeline_shows_the_board_and_leaves_nothing_behind(
    stack_endpoints: tuple[str, str], tmp_path: Path
) -> None:
    bootstrap, registry = stack_endpoints
    prefix = f"demo{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        "PULSE_BOOTSTRAP_SERVERS": bootstrap,
        "PULSE_SCHEMA_REGISTRY_URL": registry,
        "PULSE_TOPIC_PREFIX": prefix,
        "PULSE_APP_ID": prefix + "app",
        "PULSE_RAW_PARTITIONS": "2",
        "PULSE_SYMBOL_PARTITIONS": "2",
        "PULSE_WINDOWS": "1m",
        "PULSE_HOPPING_WINDOWS": "",
        "PULSE_WEB_PORT": str(free_port()),
        "PULSE_METRICS_PORT": str(free_port()),
        "PULSE_LOCAL_HOME": str(tmp_path),
        "COLUMNS": "160",
    }
    # stream time ×60: a 1-minute window closes every wall second
    cmd = [sys.executable, "-m", "cli", "demo", "--no-stack", "--speed", "60", "--duration", "45"]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=150)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "stopped producer" in out and "stopped worker" in out
    assert "$AAPL" in out or "$TSLA" in out or "$SPY" in out, out[-3000:]  # rows on the board
    assert _processes_with(prefix) == []  # no orphan worker or producer
    assert (tmp_path / "demo-logs" / "worker.log").exists()

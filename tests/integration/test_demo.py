"""``pulse demo`` end to end against the test broker + registry (``--no-stack``): the worker
and the synthetic producer run as children, the board shows symbols, and nothing is left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pulse.local.stack import free_port
from pulse.settings import PREFIX, Settings

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
        "PULSE_SURGE_WINDOW": "",  # the hour-scale detector needs 1h windows
        "PULSE_FAN_OUT_PORT": str(free_port()),
        "PULSE_WEB_PORT": str(free_port()),
        "PULSE_METRICS_PORT": str(free_port()),
        "PULSE_LOCAL_HOME": str(tmp_path),
        "COLUMNS": "160",
    }
    # stream time ×60: a 1-minute window closes every wall second; the first is out ~6 s after
    # the start (worker start-up), so 25 s leaves room for a slow machine
    cmd = [
        sys.executable,
        "-m",
        "pulse.cli",
        "demo",
        "--no-stack",
        "--speed",
        "60",
        "--duration",
        "25",
    ]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=150)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "stopped producer" in out and "stopped worker" in out
    assert "$AAPL" in out or "$TSLA" in out or "$SPY" in out, out[-3000:]  # rows on the board
    assert _processes_with(prefix) == []  # no orphan worker or producer
    assert (tmp_path / "demo-logs" / "worker.log").exists()


def _processes_mentioning(path: Path) -> list[str]:
    """Command lines of processes whose command line or environment names ``path``: the
    demo's children and the stack's JVMs all carry the run's PULSE_LOCAL_HOME."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if str(path).encode() in cmdline + (proc / "environ").read_bytes():
                if (proc / "stat").read_text().split(")")[-1].split()[0] != "Z":
                    found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def _partition_bytes(data: Path, topic_suffix: str) -> int:
    """Bytes in the broker's log segments of every partition of the demo's ``topic_suffix``."""
    return sum(f.stat().st_size for f in data.glob(f"*{topic_suffix}-*/*.log"))


@pytest.mark.slow
@pytest.mark.skipif(
    not (ROOT / "processors" / "app.py").exists(), reason="processors/app.py not there yet"
)
def test_pulse_demo_from_a_fresh_home_as_the_readme_runs_it(tmp_path: Path) -> None:
    """`pulse demo` the way the README's `make demo` runs it: its own embedded stack in a
    fresh home (only the downloads come from the shared cache, as a CI cache would give
    them), default partitions and windows, the synthetic producer with its bursts. Faster
    stream time and --duration keep CI short; nothing else differs."""
    home = tmp_path / "pulse-home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(PREFIX) and k not in ("KAFKA_BOOTSTRAP_SERVERS",
                                                     "SCHEMA_REGISTRY_URL")}  # fmt: skip
    env.update({
        "PULSE_LOCAL_HOME": str(home),
        "PULSE_LOCAL_DOWNLOADS": str(Settings.from_env().local_downloads_path),
        # free ports, so a developer's own `pulse local up` on 9092 does not collide
        "PULSE_LOCAL_KAFKA_PORT": str(free_port()),
        "PULSE_LOCAL_CONTROLLER_PORT": str(free_port()),
        "PULSE_LOCAL_REGISTRY_PORT": str(free_port()),
        "PULSE_METRICS_PORT": str(free_port()),
        "PULSE_FAN_OUT_PORT": str(free_port()),
        "PULSE_WEB_PORT": str(free_port()),
        "COLUMNS": "200",
    })  # fmt: skip
    # stream time ×20: the first burst (PLTR, 420 s in) comes 21 s after the producer starts and
    # shows ~25 s after it; 60 s are 1200 s of stream time (SOFI's and NIO's bursts too)
    cmd = [sys.executable, "-m", "pulse.cli", "demo", "--speed", "20", "--duration", "60"]
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    out = done.stdout + done.stderr
    logs = "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                     for p in sorted((home / "demo-logs").glob("*.log")))  # fmt: skip
    assert done.returncode == 0, out[-4000:] + logs
    print(f"\npulse demo from a fresh home: {took:.0f} s")
    assert "stopped producer" in out and "stopped worker" in out
    assert "stopped embedded Kafka + registry" in out

    # from its output: windows closed and were read, a spike was shown
    line = re.search(r"demo summary: (\d+) closed volume windows .* (\d+) spike\(s\) shown", out)
    assert line is not None, out[-4000:] + logs
    windows, spikes = int(line.group(1)), int(line.group(2))
    assert windows > 0 and spikes >= 1, out[-4000:] + logs
    assert "Latest spikes" in out and "$PLTR" in out  # the first synthetic burst, on the board

    # from its topics (the broker's data is left on disk by `down`)
    data = home / "instances" / "default" / "kafka-data"
    assert len(list(data.glob("*pulse.volume-*"))) == 6  # default partitions
    assert _partition_bytes(data, "pulse.volume") > 0
    assert _partition_bytes(data, "pulse.spikes") > 0

    # and nothing of the run is left: worker, producer, broker, registry
    deadline = time.monotonic() + 10
    while (left := _processes_mentioning(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == []

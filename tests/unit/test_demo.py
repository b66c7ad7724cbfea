from __future__ import annotations

import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from pulse.cli.demo import (
    DEMO_BURSTS,
    DEMO_DEFAULTS,
    DEMO_SPEED,
    Child,
    child_env,
    demo_settings,
    producer_command,
    spawn,
)
from pulse.settings import PREFIX, Settings

SYNTHETIC = ["produce", "synthetic", "--speed", "4.0"]


@pytest.mark.parametrize(
    "settings, replay, speed, command",
    [
        (Settings(), [], None, SYNTHETIC),
        (Settings(), [], 10.0, ["produce", "synthetic", "--speed", "10.0"]),
        (Settings(), ["a.json", "b.jsonl"], None, ["produce", "replay", "a.json", "b.jsonl"]),
        (Settings(), ["a.json"], 60.0, ["produce", "replay", "a.json", "--speed", "60.0"]),
        (Settings(firehose_username="u", firehose_password="p"), [], None, ["produce", "firehose"]),
        (Settings(firehose_username="u"), [], None, SYNTHETIC),  # half a credential
        (Settings(firehose_username="u", firehose_password="p"), ["x"], None,
         ["produce", "replay", "x"]),
    ],
)  # fmt: skip
def test_producer_command(
    settings: Settings, replay: list[str], speed: float | None, command: list[str]
) -> None:
    got = producer_command(settings, replay, speed)
    if command[:2] == ["produce", "synthetic"]:
        assert got[:4] == command and got.count("--burst") == len(DEMO_BURSTS)
    else:
        assert got == command


def test_demo_bursts_parse_and_start_within_minutes_of_demo_time() -> None:
    from pulse.producers.synthetic import Burst, symbol_names

    bursts = [Burst.parse(b) for b in DEMO_BURSTS]
    assert {b.symbol for b in bursts} <= set(symbol_names(500))
    assert min(b.start_s for b in bursts) / DEMO_SPEED <= 120  # wall seconds


def test_children_are_pointed_at_the_demo_stack_with_quick_spike_defaults() -> None:
    s = Settings(bootstrap_servers="h:1", schema_registry_url="u", topic_prefix="p.", app_id="a")
    env = child_env({"PATH": "/bin", "PULSE_BOOTSTRAP_SERVERS": "elsewhere:9092"}, s)
    assert env == {"PATH": "/bin", "PULSE_BOOTSTRAP_SERVERS": "h:1",
                   "PULSE_SCHEMA_REGISTRY_URL": "u", "PULSE_TOPIC_PREFIX": "p.",
                   "PULSE_APP_ID": "a", **DEMO_DEFAULTS}  # fmt: skip
    assert child_env({"PULSE_SPIKE_WINDOWS": "5m"}, s)["PULSE_SPIKE_WINDOWS"] == "5m"
    assert set(DEMO_DEFAULTS) <= {PREFIX + f.name.upper() for f in fields(Settings)}


def test_each_demo_run_gets_its_own_topics_and_group_unless_a_prefix_is_set() -> None:
    s = demo_settings(Settings(), "20261122-024500")
    assert (s.topic_prefix, s.app_id) == (
        "demo-20261122-024500.",
        "stocktwits-pulse-demo-20261122-024500",
    )
    mine = Settings(topic_prefix="me.")
    assert demo_settings(mine, "x") == mine


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_stop_kills_a_child_that_ignores_sigterm_and_what_it_started(tmp_path: Path) -> None:
    # a child that ignores SIGTERM and starts a grandchild in its process group
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    grandchild = int(proc.stdout.readline())  # type: ignore[union-attr]
    child = Child("worker", proc, tmp_path / "worker.log")
    started = time.monotonic()
    assert child.stop(timeout_s=0.5) == -9
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_spawn_runs_pulse_with_its_output_in_a_log(tmp_path: Path) -> None:
    child = spawn("producer", ["produce"], {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert child.proc.wait(60) == 2  # no kind given: usage, exit 2
    assert "usage: pulse produce" in child.tail()
    assert child.stop(1) == 2  # already gone: nothing to do


@pytest.mark.parametrize("argv", [["demo", "--help"], ["alerts", "--help"], ["tail", "--help"]])
def test_pulse_hands_leading_options_to_the_delegated_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pulse import cli
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert f"usage: pulse {argv[0]}" in capsys.readouterr().out


def test_the_summary_says_how_many_windows_were_read_and_which_symbols_spiked() -> None:
    from pulse.cli.demo import summary
    from pulse.consumers.board import SPIKES, VOLUME, Board, fold

    m = 60_000
    board = Board(window_ms=m)
    for symbol in ("PLTR", "[/]\x1b[2J", "PLTR"):
        board = fold(board, SPIKES, {"symbol": symbol, "window_start_ms": 0, "window_end_ms": m,
                                     "window_size_ms": m, "severity": "HIGH"})  # fmt: skip
    board = fold(board, VOLUME, {"symbol": "PLTR", "window_start_ms": 0, "window_size_ms": m,
                                 "window_advance_ms": m, "message_count": 3})  # fmt: skip
    text = summary(board).plain
    assert text == ("demo summary: 1 closed volume windows and 0 sentiment windows read, "
                    "3 spike(s) shown: $PLTR, $[/][2J")  # fmt: skip
    assert summary(Board(window_ms=m)).plain.endswith("0 spike(s) shown")

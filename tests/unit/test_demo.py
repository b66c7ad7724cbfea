from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from pulse.cli.demo import (
    DEMO_BURSTS,
    DEMO_DEFAULTS,
    DEMO_SPEED,
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


def test_spawn_runs_pulse_with_its_output_in_a_log(tmp_path: Path) -> None:
    child = spawn("producer", ["produce"], {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert child.proc.wait(60) == 2  # no kind given: usage, exit 2
    assert "usage: pulse produce" in child.tail()
    assert child.stop(1) == 2  # already gone: nothing to do


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every parser of the tree: (command words, parser, its line in the parent's --help)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                yield (*path, name), child, summaries.get(name)
                yield from _parsers(child, (*path, name))


def test_every_command_and_option_of_the_tree_is_documented() -> None:
    from pulse import cli

    seen = []
    for path, parser, summary in _parsers(cli.build_parser()):
        seen.append(" ".join(path))
        assert summary, f"pulse {' '.join(path)} has no line in its parent's --help"
        assert parser.description, f"pulse {' '.join(path)} --help has no description"
        assert parser.prog == "pulse " + " ".join(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"pulse {' '.join(path)} {action.option_strings or action.dest}"
    # what README, docs/, k8s/, docker-compose.yml and the tests run
    assert set(seen) >= {
        "local", "topics", "roundtrip", "worker", "tail", "board", "alerts", "demo", "produce",
        *(f"produce {kind}" for kind in
          ("firehose", "sentiment", "trending", "chart", "rest", "replay", "synthetic")),
    }  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["demo", "--help"], ["alerts", "--help"], ["tail", "--help"],
     ["produce", "--help"], ["produce", "replay", "--help"], ["worker", "--help"]],
)  # fmt: skip
def test_help_exits_0_and_shows_the_usage_of_that_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pulse import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert f"usage: {' '.join(['pulse', *argv[:-1]])}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, error",
    [
        (["produce", "nonesuch"], "invalid choice: 'nonesuch'"),
        (["board", "--window", "5 minutes"], "not a duration: '5 minutes'"),
        (["worker", "--batch-size", "5"], "--batch-size: only with --stage fan-out"),
        (["produce", "replay", "/no/such/file.jsonl"], "no such file: /no/such/file.jsonl"),
    ],
)
def test_a_wrong_option_is_one_usage_error_exit_2(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pulse import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv, settings=Settings())
    assert exc.value.code == 2
    assert error in capsys.readouterr().err


def test_the_fan_out_batch_size_help_names_the_real_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pulse import cli
    from pulse.processors.fanout import BATCH_SIZE

    with pytest.raises(SystemExit):
        cli.main(["worker", "--help"])
    assert f"(default {BATCH_SIZE})" in capsys.readouterr().out


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

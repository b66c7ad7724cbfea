"""Every command the README shows a user is one the CLI accepts, copy-pasted as written."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pulse.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# a usage synopsis, not a command: alternatives, optional parts, placeholders in capitals
SYNOPSIS = re.compile(r"[\[\]|…]|\b(SOURCE|TOPIC|FILE|PATH|PORT|NAME)\b")


def shown_commands(prefix: str) -> list[str]:
    """Commands starting with ``prefix`` in code spans and in shell blocks."""
    spans = re.findall(r"`([^`\n]+)`", README)
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    found = []
    for text in [*spans, *lines]:
        text = text.split(" #")[0].split(" | ")[0].strip()
        text = re.sub(r"^(\.venv/bin/)", "", text)
        if text.startswith(prefix) and not SYNOPSIS.search(text):
            found.append(text)
    return sorted(set(found))


PULSE = shown_commands("pulse ")
BENCH = shown_commands("python -m bench.")


def test_the_readme_shows_commands() -> None:
    assert len(PULSE) >= 10 and len(BENCH) >= 4


def subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


@pytest.mark.parametrize("command", PULSE)
def test_each_pulse_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    if argv == ["--help"]:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args(argv)
        assert done.value.code == 0
    elif len(argv) == 1:  # a command named in prose (`pulse tail` prints …)
        assert argv[0] in subcommands()
    else:
        args = build_parser().parse_args(argv)  # SystemExit(2) on an unknown option
        assert callable(args.handler)


@pytest.mark.parametrize("command", BENCH)
def test_each_benchmark_command_has_its_options(command: str) -> None:
    module, *args = shlex.split(command)[2:]
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for option in (a for a in args if a.startswith("--")):
        assert option in done.stdout, f"{module} has no {option}"

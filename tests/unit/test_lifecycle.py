"""pulse/lifecycle.py with real processes and real signals (no sockets)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pulse.lifecycle import Child, Stop, signals_ignored, stop_all, stop_on_signals

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _wait_for_line(path: Path, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


# a child that says it is ready, stops cleanly on SIGTERM with exit 3
GRACEFUL = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
# a child that ignores SIGTERM
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_child_gets_its_environment_and_writes_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    script = (
        "import os, sys; print(os.environ['GREETING'], flush=True); print('oops', file=sys.stderr)"
    )
    child = Child("hello", [PY, "-c", script], env={"GREETING": "hi"}, log_path=log).start()
    assert child.wait(30) == 0
    assert log.read_text().split() == ["hi", "oops"]  # stdout and stderr, in one file
    assert child.tail(1) == "oops"
    assert child.stop(1) == 0  # already gone: nothing to do, its code
    child.start().wait(30)  # started again: the log is appended to
    assert log.read_text().split() == ["hi", "oops", "hi", "oops"]


def test_stop_sends_sigterm_and_returns_the_exit_code(tmp_path: Path) -> None:
    log = tmp_path / "graceful.log"
    child = Child("graceful", [PY, "-c", GRACEFUL], log_path=log).start()
    _wait_for_line(log, "ready")
    assert child.alive()
    assert child.stop(timeout_s=10) == 3
    assert not child.alive() and child.returncode == 3


def test_stop_kills_a_child_that_ignores_sigterm_after_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    child = Child("stubborn", [PY, "-c", STUBBORN], log_path=log).start()
    _wait_for_line(log, "ready")
    started = time.monotonic()
    assert child.stop(timeout_s=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 5


def test_own_group_stop_also_ends_what_the_child_started(tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = Child("parent", [PY, "-c", script], log_path=log, own_group=True).start()
    deadline = time.monotonic() + 10
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(log.read_text().split()[0])
    assert os.getpgid(grandchild) == child.pid  # its own group, holding the grandchild
    assert child.stop(timeout_s=0.5) == -signal.SIGKILL
    assert _wait_gone(grandchild)


def test_a_child_dies_with_its_parent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed parent (no clean-up at all) leaves no child behind."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    log = tmp_path / "orphan.log"
    parent = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pulse.lifecycle import Child\n"
        f"c = Child('orphan', [sys.executable, '-c', {GRACEFUL!r}], log_path=Path({str(log)!r}))\n"
        "print(c.start().pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([PY, "-c", parent], stdout=subprocess.PIPE)
    pid = int(proc.stdout.readline())  # type: ignore[union-attr]
    _wait_for_line(log, "ready")
    proc.kill()
    proc.wait(10)
    assert _wait_gone(pid), "the child outlived its SIGKILLed parent"


def test_stop_all_shares_one_timeout(tmp_path: Path) -> None:
    children = [
        Child(f"s{i}", [PY, "-c", STUBBORN], log_path=tmp_path / f"s{i}.log").start()
        for i in range(3)
    ]
    for c in children:
        _wait_for_line(tmp_path / f"{c.name}.log", "ready")
    started = time.monotonic()
    stop_all(children, timeout_s=1.0)
    assert time.monotonic() - started < 2.5  # not 3 × 1 s
    assert [c.returncode for c in children] == [-signal.SIGKILL] * 3


def test_a_child_never_started_has_nothing_to_stop() -> None:
    child = Child("idle", [PY, "-c", "pass"])
    assert child.stop(1) is None and child.returncode is None and not child.alive()
    child.kill()  # no error
    assert child.tail() == ""


def test_sigterm_and_sigint_set_the_stop_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)  # SIG_IGN under an xdist worker
    stop = Stop()
    with stop_on_signals(stop):
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5) and stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is before
    again = Stop()
    with stop_on_signals(again):
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: a stop request
        assert again.wait(5)
    assert signal.getsignal(signal.SIGINT) is before_int


def test_stop_sleep_returns_early_when_stopped() -> None:
    stop = Stop()
    assert stop.sleep(0.01) is False
    stop.set()
    started = time.monotonic()
    assert stop.sleep(30) is True
    assert time.monotonic() - started < 1


def test_under_asyncio_the_signal_is_delivered_through_the_loop() -> None:
    async def main() -> bool:
        stopped = asyncio.Event()
        with stop_on_signals(stopped.set, loop=asyncio.get_running_loop()):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stopped.wait(), 5)
        return stopped.is_set()

    before = signal.getsignal(signal.SIGTERM)
    assert asyncio.run(main())
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_ignored_for_a_clean_up() -> None:
    before_int = signal.getsignal(signal.SIGINT)
    with signals_ignored():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored: no KeyboardInterrupt
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before_int

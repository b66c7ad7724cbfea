"""Run the processing stages as child processes of one ``pulse worker`` (laptops, the demo).

Each stage gets its own process (and so its own core). A child that exits on its own is
started again after a short pause (its input is re-read from its committed offsets); SIGTERM
or SIGINT stops every child (SIGTERM, then SIGKILL after a timeout) and returns. Children
are told by the kernel to stop if this process dies (``PR_SET_PDEATHSIG``), so a SIGKILLed
supervisor leaves nothing running.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0
RESTART_PAUSE_S = 2.0
PR_SET_PDEATHSIG = 1
FATAL = 2  # exit code of a stage that cannot run as configured


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: children may outlive a SIGKILLed supervisor
        pass


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pulse.processors", *args],
                            preexec_fn=_die_with_parent)


def _stop_all(children: dict[int, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in children.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in %.0f s: killing it", proc.pid, STOP_TIMEOUT_S)
            proc.kill()
            proc.wait(10)


def supervise(commands: list[list[str]]) -> int:
    """Run ``python -m pulse.processors <args>`` for each of ``commands`` until stopped."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children = {i: _start(args) for i, args in enumerate(commands)}
    log.info("worker: stages running as pids %s", [p.pid for p in children.values()])
    try:
        while not stopping:
            time.sleep(0.2)
            for i, proc in list(children.items()):
                code = proc.poll()
                if code is None or stopping:
                    continue
                if code == FATAL:  # a configuration error: starting again would only repeat it
                    log.error("stage %s exited with %d (fatal): stopping", " ".join(commands[i]),
                              code)
                    return code
                log.warning("stage %s exited with %d: starting it again in %.0f s",
                            " ".join(commands[i]), code, RESTART_PAUSE_S)
                time.sleep(RESTART_PAUSE_S)
                children[i] = _start(commands[i])
    finally:
        _stop_all(children)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0

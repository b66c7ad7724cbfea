"""Run the processing stages as child processes of one ``pulse worker`` (laptops, the demo).

Each stage gets its own process (and so its own core). A child that exits on its own is
started again after a short pause (its input is re-read from its committed offsets); SIGTERM
or SIGINT stops every child (SIGTERM, then SIGKILL after a timeout) and returns. Children
are told by the kernel to stop if this process dies (:class:`pulse.lifecycle.Child`), so a
SIGKILLed supervisor leaves nothing running.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence

from pulse.lifecycle import Child, Stop, stop_all, stop_on_signals

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0
RESTART_PAUSE_S = 2.0
FATAL = 2  # exit code of a stage that cannot run as configured


def stage_command(stage: str) -> list[str]:
    """How the supervisor starts one stage: ``pulse worker --stage STAGE --no-prepare``."""
    return [sys.executable, "-m", "pulse.cli", "worker", "--stage", stage, "--no-prepare"]


def supervise(commands: Mapping[str, Sequence[str]]) -> int:
    """Run each of ``commands`` (name → a full argv) as a child until stopped; 0, or the exit
    code of a child that failed with :data:`FATAL` (starting it again would only repeat it)."""
    stop = Stop()
    children = [Child(name, argv) for name, argv in commands.items()]
    with stop_on_signals(stop):
        try:
            for child in children:
                child.start()
            log.info("worker: stages running as pids %s", [c.pid for c in children])
            return _watch(children, stop)
        finally:
            stop_all(children, STOP_TIMEOUT_S)


def _watch(children: list[Child], stop: Stop) -> int:
    """Restart a child that exited, until ``stop``; a :data:`FATAL` exit ends the watch."""
    while not stop.sleep(0.2):
        for child in children:
            code = child.returncode
            if code is None or stop:
                continue
            if code == FATAL:
                log.error("stage %s exited with %d (fatal): stopping", child.name, code)
                return code
            log.warning("stage %s exited with %d: starting it again in %.0f s",
                        child.name, code, RESTART_PAUSE_S)  # fmt: skip
            if stop.sleep(RESTART_PAUSE_S):
                break
            child.start()
    return 0


def main(argv: Sequence[str]) -> int:
    """``python -m pulse.processors.supervisor LOG_LEVEL STAGE...``: what ``pulse worker``
    (no ``--stage``) becomes once the topics are ready (:mod:`pulse.processors.worker`)."""
    level, *stages = argv
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return supervise({name: stage_command(name) for name in stages})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

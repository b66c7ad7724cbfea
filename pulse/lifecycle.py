"""Process lifecycle shared by every long-running command: stop signals and child processes.

* :class:`Stop` is the one stop request: SIGTERM or SIGINT (Ctrl-C) set it through
  :func:`stop_on_signals`, and loops check it at their next turn, then flush and exit
  cleanly. Under asyncio the same context manager takes the running loop, and the signals
  are delivered through it (``loop.add_signal_handler``).
* :class:`Child` runs one child process: its environment, its output in a log file, told by
  the kernel to stop when its parent dies (``PR_SET_PDEATHSIG``, Linux), stopped with SIGTERM
  and then SIGKILL after a timeout.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, Self

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stop:
    """A stop request, set once by a signal (or by anyone) and read by a loop."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self, *_: Any) -> None:
        """Request a stop; takes (and ignores) a signal handler's arguments."""
        if not self.event.is_set():
            log.info("stop requested: finishing what is in flight")
        self.event.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until stopped or ``timeout_s`` passed; True if stopped."""
        return self.event.wait(timeout_s)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if stopped."""
        return self.event.wait(max(0.0, seconds))


@contextmanager
def stop_on_signals(
    on_stop: Callable[[], object] | Stop,
    loop: asyncio.AbstractEventLoop | None = None,
    signals: Sequence[int] = STOP_SIGNALS,
) -> Iterator[None]:
    """Call ``on_stop`` on SIGTERM/SIGINT for the duration; the previous handlers come back.

    Without ``loop``: Python signal handlers (the main thread only). With the running loop:
    the loop's own handlers, so ``on_stop`` runs as a loop callback and may touch asyncio
    objects (an ``asyncio.Event.set``).
    """
    callback = on_stop.set if isinstance(on_stop, Stop) else on_stop
    if loop is not None:
        for sig in signals:
            loop.add_signal_handler(sig, callback)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
        return
    with _handlers(dict.fromkeys(signals, lambda *_: callback())):
        yield


def signals_ignored(signals: Sequence[int] = (signal.SIGINT,)) -> AbstractContextManager[None]:
    """Ignore ``signals`` for the duration: a clean-up a second Ctrl-C must not cut short."""
    return _handlers(dict.fromkeys(signals, signal.SIG_IGN))


@contextmanager
def _handlers(handlers: Mapping[int, Any]) -> Iterator[None]:
    """Python signal handlers for the duration; the previous ones come back."""
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- child processes -----------------------------------------------------------------------

PR_SET_PDEATHSIG = 1
try:  # resolved once, before any fork: the child runs only the prctl call
    _prctl: Callable[..., int] | None = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not Linux (glibc): children may outlive a SIGKILLed parent
    _prctl = None


def _die_with_parent() -> None:
    """In the forked child: SIGTERM when the parent's spawning thread exits."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One child process: ``argv`` with ``env``, its stdout and stderr in ``log_path``.

    :param own_group: a process group of its own: the terminal's Ctrl-C reaches only the
        parent (which stops children in its own order), and :meth:`stop` also ends whatever
        the child started and left in its group.
    :param die_with_parent: the kernel sends SIGTERM when the parent dies (Linux). It fires
        when the *thread* that called :meth:`start` exits: start children from a thread that
        lives as long as they should (the main thread).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        own_group: bool = False,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = None if env is None else dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.own_group = own_group
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the process (again, if it ran before); the log file is appended to."""
        out: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                stdin=subprocess.DEVNULL,
                start_new_session=self.own_group,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        finally:
            if out is not None:
                out.close()
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (``-N``: killed by signal N), else None."""
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Its exit code. :raises subprocess.TimeoutExpired: still running at the timeout."""
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code (None: never
        started). Safe to call on a child that already exited."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in %.0f s: killing it",
                            self.name, self.proc.pid, timeout_s)  # fmt: skip
                self._signal(signal.SIGKILL)
                self.proc.wait()
        if self.own_group:
            _signal_group(self.proc.pid, signal.SIGKILL)  # anything it started and left behind
        return self.proc.returncode

    def terminate(self) -> None:
        """SIGTERM (to its group with ``own_group``) if it is running; does not wait."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL at once: no flush, no commit, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(30)

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of its log ("" without one)."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.own_group:
            _signal_group(self.proc.pid, sig)
        else:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


def stop_all(children: Iterable[Child], timeout_s: float = 30.0) -> None:
    """Stop ``children`` together: SIGTERM to each, then SIGKILL to those still running
    ``timeout_s`` later (one timeout for all, not one each)."""
    children = list(children)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.stop(max(0.1, deadline - time.monotonic()))


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass

"""``pulse demo``: the whole pipeline on this machine, with the live board.

Starts the embedded Kafka + registry, creates the topics, runs ``pulse worker`` (fan-out +
signals) and one producer as child processes (synthetic by default; ``--replay PATH…``; the
Firehose when its credentials are set) and shows the board. Ctrl-C or SIGTERM stops the
producer, then the worker, then the stack (unless ``--keep-stack``, or it was already
running): nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from pulse.cli.common import Subcommands, command
from pulse.cli.consume import window_ms
from pulse.lifecycle import Child, Stop, signals_ignored, stop_on_signals
from pulse.settings import Settings

if TYPE_CHECKING:
    from pulse.consumers.board import Board
    from pulse.local.stack import Endpoints, LocalStack

STOP_TIMEOUT_S = {"producer": 15.0, "worker": 30.0}  # then SIGKILL


# synthetic bursts (stream seconds after start): a few symbols spike within the first minutes
DEMO_BURSTS = ("PLTR@420+180x15", "SOFI@720+120x25", "NIO@1020+180x20", "COIN@1320+120x30")
DEMO_SPEED = 4.0  # stream time ×4: 1-minute windows close every 15 s, the first spike in ~2 min


def producer_command(
    settings: Settings, replay: Sequence[str], speed: float | None = None
) -> list[str]:
    """Which producer the demo runs: replay if asked, the Firehose if credentials are set."""
    if replay:
        return ["produce", "replay", *replay, *(["--speed", str(speed)] if speed else [])]
    if settings.firehose_username and settings.firehose_password:
        return ["produce", "firehose"]
    bursts = [arg for b in DEMO_BURSTS for arg in ("--burst", b)]
    return ["produce", "synthetic", "--speed", str(speed or DEMO_SPEED), *bursts]


# Spike detection as deployed scores 5-minute windows after 12 of them (an hour) of baseline;
# a demo scores 1-minute windows after 5, unless these variables are set already.
DEMO_DEFAULTS = {"PULSE_SPIKE_WINDOWS": "1m", "PULSE_SPIKE_WARMUP_WINDOWS": "5"}


def demo_settings(settings: Settings, stamp: str) -> Settings:
    """Topics and consumer group of this run alone, unless a topic prefix is configured.

    Each demo's synthetic stream starts at "now": on the topics of an earlier run its
    messages would be late for windows that run already closed.
    """
    if settings.topic_prefix:
        return settings
    return settings.replace(topic_prefix=f"demo-{stamp}.", app_id=f"{settings.app_id}-demo-{stamp}")


def child_env(base: dict[str, str], settings: Settings) -> dict[str, str]:
    """The children's environment: ours, pointed at the demo's stack, topics and group."""
    return {
        **DEMO_DEFAULTS,
        **base,
        "PULSE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PULSE_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "PULSE_TOPIC_PREFIX": settings.topic_prefix,
        "PULSE_APP_ID": settings.app_id,
    }


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Child:
    """Run ``pulse ARGV…`` in its own process group, output to ``log_dir/NAME.log``."""
    # own process group: the terminal's Ctrl-C reaches only us, and we stop children in order
    return Child(name, [sys.executable, "-m", "pulse.cli", *argv], env=env,
                 log_path=log_dir / f"{name}.log", own_group=True).start()  # fmt: skip


def register(sub: Subcommands) -> None:
    p = command(
        sub, "demo", _demo, summary="the whole pipeline locally, with a live view",
        description="Embedded Kafka + registry, topics, the worker, a producer and the "
        "live board, in one command. Ctrl-C stops everything.",
    )  # fmt: skip
    p.add_argument(
        "--replay",
        nargs="+",
        metavar="PATH",
        default=[],
        help="replay captured files instead of the synthetic generator",
    )
    p.add_argument(
        "--keep-stack", action="store_true", help="leave Kafka and the registry running afterwards"
    )
    p.add_argument(
        "--no-stack",
        action="store_true",
        help="use the cluster of PULSE_BOOTSTRAP_SERVERS instead of the embedded one",
    )
    p.add_argument(
        "--instance", default="default", help="embedded stack instance (default: default)"
    )
    p.add_argument(
        "--speed",
        type=float,
        metavar="N",
        help=f"synthetic or replayed stream time ×N (synthetic default {DEMO_SPEED:g})",
    )
    p.add_argument(
        "--window",
        type=window_ms,
        metavar="DURATION",
        help="window size on the board, e.g. 1m (default: smallest)",
    )
    p.add_argument(
        "--web", type=int, metavar="PORT", help="also serve the board as a web page on this port"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="S",
        help="stop by itself after S seconds (default: run until Ctrl-C)",
    )


@dataclass(frozen=True)
class DemoOptions:
    """What ``pulse demo`` runs (its options, parsed)."""

    replay: tuple[str, ...] = ()
    keep_stack: bool = False
    no_stack: bool = False
    instance: str = "default"
    speed: float | None = None
    window_ms: int | None = None  # None: the smallest of PULSE_WINDOWS
    web_port: int | None = None
    duration_s: float = 0.0  # 0: until Ctrl-C


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    options = DemoOptions(replay=tuple(args.replay), keep_stack=args.keep_stack,
                          no_stack=args.no_stack, instance=args.instance, speed=args.speed,
                          window_ms=args.window, web_port=args.web,
                          duration_s=args.duration)  # fmt: skip
    return run(settings, options)


def run(settings: Settings, options: DemoOptions) -> int:
    """``pulse demo``: until Ctrl-C, SIGTERM, ``duration_s`` or a failed child; the exit code.
    Whatever it started is stopped before it returns."""
    console = Console()
    stop = Stop()
    stack: LocalStack | None = None
    stop_stack = False
    children: list[Child] = []
    started = time.monotonic()
    # SIGTERM stops like Ctrl-C (a KeyboardInterrupt, which also cuts a stack start short);
    # the board loop checks `stop` four times a second
    with stop_on_signals(stop, signals=(signal.SIGTERM,)):
        try:
            if not options.no_stack:
                from pulse.local.stack import LocalStack, StackError

                stack = LocalStack.from_settings(settings, name=options.instance)
                # decided before up(): a start that fails half-way must not leave a JVM behind
                stop_stack = not options.keep_stack and not any(stack.running().values())
                try:
                    endpoints = _start_stack(stack, console, options.instance)
                except StackError as exc:
                    console.print(Text(f"pulse demo: {exc}", style="red"))
                    return 1
                settings = settings.replace(
                    bootstrap_servers=endpoints.bootstrap_servers,
                    schema_registry_url=endpoints.schema_registry_url,
                )
            return _pipeline(settings, options, console, stop, children, started)
        except KeyboardInterrupt:
            return 0
        finally:
            stop.set()
            # a second Ctrl-C must not cut the clean-up short and leave a JVM or a child behind
            with signals_ignored():
                _clean_up(children, stack if stop_stack else None, console)
                if stack is not None and not stop_stack:
                    console.print("Kafka + registry still running: "
                                  f"pulse local down --instance {options.instance}")  # fmt: skip


def _pipeline(
    settings: Settings,
    options: DemoOptions,
    console: Console,
    stop: Stop,
    children: list[Child],
    started: float,
) -> int:
    """Topics, the worker and a producer (into ``children``), the board until ``stop``, the
    summary; 1 if a child failed."""
    from pulse.consumers.board import default_window_ms
    from pulse.consumers.board import run as board
    from pulse.consumers.kafka_errors import ReaderFailed
    from pulse.schemas.admin import ensure_topics

    settings = demo_settings(settings, time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    created = ensure_topics(settings)
    console.print(
        f"Kafka {settings.bootstrap_servers} · registry {settings.schema_registry_url}"
        f" · topics {settings.topic('*')}: {len(created)} created"
    )
    arrivals = FirstArrivals(settings, started)
    threading.Thread(target=arrivals.run, args=(stop.event,), daemon=True).start()
    env = child_env(dict(os.environ), settings)
    log_dir = settings.local_home_path / "demo-logs"
    children.append(spawn("worker", ["worker"], env, log_dir))
    produce = producer_command(settings, list(options.replay), options.speed)
    children.append(spawn("producer", produce, env, log_dir))
    console.print(f"worker and `pulse {' '.join(produce)}` started; logs in {log_dir}")
    threading.Thread(target=_watch, args=(children, stop, options.duration_s), daemon=True).start()
    window = options.window_ms or default_window_ms(settings.windows)
    try:  # until Ctrl-C or stop
        shown = board(settings, window_ms=window, stop=stop.event, console=console,
                      web_port=options.web_port)  # fmt: skip
    except ReaderFailed as exc:
        console.print(Text(f"pulse demo: {exc}", style="red"))
        return 1
    if not console.is_terminal:
        console.line()  # the board's last frame, printed as text, ends mid-line
    console.print(summary(shown))
    console.print(arrivals.line())
    failed = [c for c in children if c.returncode not in (None, 0)]
    for c in failed:
        # log lines are text: "[…]" in them must not be read as markup
        console.print(Text(f"{c.name} exited with {c.returncode}", style="red"),
                      Text(f"; last lines of {c.log_path}:\n{c.tail()}"))  # fmt: skip
    return 1 if failed else 0


def _clean_up(children: list[Child], stack: LocalStack | None, console: Console) -> None:
    """Stop the children (producer first: the worker drains what it sent), then ``stack``."""
    for child in reversed(children):
        rc = child.stop(STOP_TIMEOUT_S[child.name])
        console.print(f"stopped {child.name} ({rc})")
    if stack is not None:
        stack.down()
        console.print("stopped embedded Kafka + registry")


def _start_stack(stack: LocalStack, console: Console, instance: str) -> Endpoints:
    """``stack.up()``, saying what it waits for and for how long (a first start downloads
    ≈ 210 MB and starts two JVMs: a silent minute would look broken)."""
    started = time.monotonic()
    done = threading.Event()
    with console.status(f"starting embedded Kafka + registry (instance {instance})…") as status:

        def tick() -> None:
            while not done.wait(1.0):
                status.update(f"starting embedded Kafka + registry (instance {instance}): "
                              f"{time.monotonic() - started:.0f} s")  # fmt: skip

        threading.Thread(target=tick, daemon=True).start()
        try:
            endpoints = stack.up()
        finally:
            done.set()
    console.print(f"embedded Kafka + registry up in {time.monotonic() - started:.0f} s")
    return endpoints


class FirstArrivals:
    """When the first closed window and the first spike reached their topics, in seconds since
    the demo started: what a newcomer waits for (printed with the summary)."""

    def __init__(self, settings: Settings, started: float) -> None:
        from pulse import kafka
        from pulse.schemas import topics

        self.started = started
        self.at: dict[str, float] = {}
        self._names = {
            topics.VOLUME.full_name(settings): "window",
            topics.SPIKES.full_name(settings): "spike",
        }
        self._consumer = kafka.consumer(kafka.reader_config(settings, "demo-first", role="demo"))
        self._consumer.subscribe(list(self._names))

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set() and len(self.at) < len(self._names):
                msg = self._consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                if what := self._names.get(msg.topic() or ""):
                    self.at.setdefault(what, time.monotonic() - self.started)
        except Exception:  # noqa: BLE001 - a missing figure must never stop the demo
            pass
        finally:
            self._consumer.close()

    def line(self) -> str:
        parts = [
            f"first {what} after {self.at[what]:.0f} s" if what in self.at else f"no {what} yet"
            for what in ("window", "spike")
        ]
        return " · ".join(parts) + " (since `pulse demo` started)"


def summary(board: Board) -> Text:
    """One line on what the run showed: closed windows read and spikes, by symbol."""
    from pulse.consumers.board import SENTIMENT, VOLUME
    from pulse.consumers.records import printable

    symbols = ", ".join(dict.fromkeys(f"${printable(s['symbol'])}" for s in board.spikes))
    return Text(
        f"demo summary: {board.seen.get(VOLUME, 0)} closed volume windows and "
        f"{board.seen.get(SENTIMENT, 0)} sentiment windows read, "
        f"{len(board.spikes)} spike(s) shown{': ' + symbols if symbols else ''}"
    )


def _watch(children: list[Child], stop: Stop, duration_s: float) -> None:
    """Stop the demo when a child fails (a producer that finished a replay is fine)."""
    deadline = time.monotonic() + duration_s if duration_s else None
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            stop.set()
        for c in children:
            if c.returncode not in (None, 0) or (c.name == "worker" and c.returncode == 0):
                stop.set()

"""``pulse tail``, ``pulse board``, ``pulse alerts``: the readers of the output topics."""

from __future__ import annotations

import argparse
import sys

from pulse.cli.common import Subcommands, command
from pulse.durations import parse_duration_ms
from pulse.schemas.topics import ALL
from pulse.settings import Settings


def register(sub: Subcommands) -> None:
    _tail_parser(sub)
    _board_parser(sub)
    _alerts_parser(sub)


def _tail_parser(sub: Subcommands) -> None:
    p = command(
        sub, "tail", _tail, summary="print a topic decoded to JSON lines",
        description="Print a topic's records as JSON lines: "
        '{"topic","partition","offset","timestamp_ms","key","value"}.',
        epilog="Topics (the configured PULSE_TOPIC_PREFIX is added): "
        + ", ".join(spec.name for spec in ALL),
    )  # fmt: skip
    p.add_argument("topic", help="topic name, with or without the prefix")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record (default: only new records)",
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="print only records with this key (repeatable), e.g. --key AAPL",
    )
    p.add_argument("--max", type=int, default=0, metavar="N", help="stop after N records")
    p.add_argument(
        "--idle-exit",
        type=float,
        default=0.0,
        metavar="S",
        help="stop after S seconds without a new record (default: never)",
    )
    p.add_argument("--value-only", action="store_true", help="print only the decoded value")


def _tail(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.consumers.tail import TailOptions, run

    options = TailOptions(from_beginning=args.from_beginning, keys=frozenset(args.key),
                          max_records=args.max, idle_exit_s=args.idle_exit,
                          value_only=args.value_only)  # fmt: skip
    return run(settings, args.topic, options)


def _board_parser(sub: Subcommands) -> None:
    p = command(
        sub, "board", _board, summary="live terminal board of the output topics",
        description="Live board of the signals: top symbols by current volume, bullish "
        "ratios with their intervals, cold symbols, spikes. Ctrl-C stops it.",
    )  # fmt: skip
    p.add_argument(
        "--window",
        type=window_ms,
        metavar="DURATION",
        help="window size to show, e.g. 1m (default: the smallest of PULSE_WINDOWS)",
    )
    p.add_argument("--top", type=int, default=15, help="symbols to show (default 15)")
    p.add_argument(
        "--lookback",
        type=float,
        default=3600.0,
        metavar="S",
        help="read records from S seconds ago (default 3600)",
    )
    p.add_argument("--web", type=int, metavar="PORT", help="also serve the board as a web page")
    p.add_argument(
        "--web-host", default="127.0.0.1", help="address of the web page (default 127.0.0.1)"
    )


def window_ms(text: str) -> int:
    """``--window`` as argparse reads it: a duration, said to be wrong in one usage line."""
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _board(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.consumers.board import run
    from pulse.consumers.kafka_errors import ReaderFailed

    try:
        run(settings, window_ms=args.window, top=args.top, lookback_s=args.lookback,
            web_port=args.web, web_host=args.web_host)  # fmt: skip
    except ReaderFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _alerts_parser(sub: Subcommands) -> None:
    p = command(
        sub, "alerts", _alerts, summary="POST every spike to webhooks",
        description="POST every spike of pulse.spikes as JSON to webhooks (at least once).",
    )  # fmt: skip
    p.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="webhook URL (repeatable); added to PULSE_ALERT_WEBHOOK_URLS",
    )
    p.add_argument(
        "--health-port",
        type=int,
        metavar="PORT",
        help="port of /healthz and /metrics (default PULSE_METRICS_PORT; <0: off)",
    )


def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.consumers.alerts import run

    return run(settings, args.webhook, args.health_port)

"""What every command module of the ``pulse`` tree shares: how a subcommand is declared."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from pulse.settings import Settings

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# a subcommand's handler: the parsed options → the domain's run(settings, …) → exit code
Handler: TypeAlias = Callable[[Settings, argparse.Namespace], int]


def command(
    sub: Subcommands,
    name: str,
    handler: Handler,
    *,
    summary: str,
    description: str | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` is its line in the parent's --help, ``description`` (or the
    summary) heads its own."""
    parser = sub.add_parser(name, help=summary, description=description or summary, epilog=epilog)
    parser.set_defaults(handler=handler, parser=parser)  # parser: for errors in the handler
    return parser


def metrics_port(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port``, shared by the producers."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="/metrics and /healthz port (default PULSE_METRICS_PORT; -1: off)",
    )


def port_or(port: int | None, default: int) -> int:
    """An option's port, or the configured one when the option was not given."""
    return default if port is None else port

"""`pulse`: the one command of stocktwits-pulse. Each subcommand has --help.

One argparse tree: each command group declares its subcommands in its own module
(:mod:`pulse.cli.produce`, :mod:`~pulse.cli.worker`, :mod:`~pulse.cli.consume`,
:mod:`~pulse.cli.demo`, :mod:`~pulse.cli.local`, :mod:`~pulse.cli.topics`), and each handler
calls a plain ``run…(settings, …)`` of the domain module. The domain modules parse nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pulse.cli import consume, demo, local, produce, topics, worker
from pulse.settings import Settings, SettingsError

GROUPS = (local, topics, produce, worker, consume, demo)  # the order of `pulse --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulse",
        description="stocktwits-pulse: Stocktwits stream → Kafka → per-symbol signals. "
        "Configuration comes from PULSE_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run the subcommand; its exit code.

    :param settings: instead of ``Settings.from_env()`` (tests).
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            parser.error(str(exc))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from pulse.schemas.admin import AuthenticationFailed

    try:
        return int(args.handler(settings, args))
    except AuthenticationFailed as exc:  # a wrong password: one line, no traceback
        print(f"pulse {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`pulse`: the one command of stocktwits-pulse. Each subcommand has --help."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable

from pulse.settings import Settings, SettingsError

# subcommands implemented elsewhere: name -> (module, function, one-line help)
DELEGATED: dict[str, tuple[str, str, str]] = {
    "produce": ("pulse.producers.cli", "main",
                "run a producer: firehose, sentiment, trending, chart, rest, replay, synthetic"),
    "worker": ("pulse.processors.worker", "main",
               "run the processing stages (fan-out + faust signals)"),
    "tail": ("pulse.consumers.tail", "main", "print a topic decoded to JSON lines"),
    "alerts": ("pulse.consumers.alerts", "main", "POST every spike to webhooks"),
    "board": ("pulse.consumers.board", "main", "live terminal board of the output topics"),
    "demo": ("pulse.cli.demo", "main", "the whole pipeline locally, with a live view"),
}  # fmt: skip


def _local(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.local.stack import LocalStack, StackError

    stack = LocalStack.from_settings(settings, name=args.instance)
    try:
        if args.action == "up":
            endpoints = stack.up()
            print(f"Kafka:           {endpoints.bootstrap_servers}   (log: {endpoints.kafka_log})")
            registry, registry_log = endpoints.schema_registry_url, endpoints.registry_log
            print(f"Schema registry: {registry}   (log: {registry_log})")
            print(f"export PULSE_BOOTSTRAP_SERVERS={endpoints.bootstrap_servers}")
            print(f"export PULSE_SCHEMA_REGISTRY_URL={endpoints.schema_registry_url}")
        elif args.action == "down":
            stack.down()
            print(f"stopped instance {args.instance!r}")
        elif args.action == "destroy":
            stack.destroy()
            print(f"stopped and deleted instance {args.instance!r}")
        else:
            status = stack.status()
            print(json.dumps(status, indent=2))
            return 0 if status["kafka"] and status["registry"] else 3
    except StackError as exc:
        print(f"pulse local {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.schemas.admin import ensure_topics
    from pulse.schemas.serde import Serde
    from pulse.schemas.topics import ALL

    created = ensure_topics(settings)
    print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
    if args.register:
        serde = Serde(settings)
        for spec in ALL:
            print(f"{spec.value_subject(settings)}: schema id {serde.register(spec)}")
    return 0


def _roundtrip(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.producers.roundtrip import run

    return run(settings, args.files)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulse",
        description="stocktwits-pulse: Stocktwits stream → Kafka → per-symbol signals. "
        "Configuration comes from PULSE_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    local = sub.add_parser("local", help="embedded Kafka + schema registry on 127.0.0.1")
    local.add_argument("action", choices=["up", "down", "status", "destroy"])
    local.add_argument("--instance", default="default", help="instance name (default: default)")
    local.set_defaults(handler=_local)

    topics = sub.add_parser("topics", help="create every pipeline topic (idempotent)")
    topics.add_argument("--register", action="store_true", help="also register every schema")
    topics.set_defaults(handler=_topics)

    roundtrip = sub.add_parser(
        "roundtrip", help="parse captured Stocktwits files, send them through Kafka, decode"
    )
    roundtrip.add_argument("files", nargs="+", help="REST API JSON responses or Firehose JSONL")
    roundtrip.set_defaults(handler=_roundtrip)

    for name, (_, _, text) in DELEGATED.items():
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv[:1] and argv[0] in DELEGATED:
        # hand the rest over untouched: argparse's REMAINDER rejects a leading option
        # (`pulse demo --replay …`, `pulse alerts --webhook …`, `pulse produce --help`)
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = parser.parse_args(argv)
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
        return _run(args, settings)
    except AuthenticationFailed as exc:  # a wrong password: one line, no traceback
        print(f"pulse {args.command}: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in DELEGATED:
        module, func, _ = DELEGATED[args.command]
        try:
            entry: Callable[[Settings, list[str]], int] = getattr(
                importlib.import_module(module), func
            )
        except ImportError as exc:
            print(f"pulse {args.command}: not available ({exc})", file=sys.stderr)
            return 2
        return entry(settings, args.rest)
    return int(args.handler(settings, args))


if __name__ == "__main__":
    sys.exit(main())

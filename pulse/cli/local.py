"""``pulse local up|down|status|destroy``: the embedded Kafka + schema registry."""

from __future__ import annotations

import argparse
import json
import sys

from pulse.cli.common import Subcommands, command
from pulse.settings import Settings

ACTIONS = {
    "up": "start (or find running) Kafka and the registry; prints their addresses",
    "down": "stop them, keeping their data",
    "status": "what runs, as JSON (exit 3 unless both run)",
    "destroy": "stop them and delete this instance's data",
}


def register(sub: Subcommands) -> None:
    p = command(
        sub, "local", _local, summary="embedded Kafka + schema registry on 127.0.0.1",
        description="The local development stack: one Kafka broker (KRaft) and a schema "
        "registry on 127.0.0.1, run from the user's home (PULSE_LOCAL_HOME).",
        epilog="actions: " + "; ".join(f"{name}: {text}" for name, text in ACTIONS.items()),
    )  # fmt: skip
    p.add_argument("action", choices=list(ACTIONS), help="up, down, status or destroy")
    p.add_argument("--instance", default="default", help="instance name (default: default)")


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

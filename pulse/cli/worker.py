"""``pulse worker``: the processing stages (fan-out, signals), one or both."""

from __future__ import annotations

import argparse

from pulse.cli.common import Subcommands, command
from pulse.settings import Settings

STAGES = ("fan-out", "signals")  # processors/worker.py's, without importing it for --help
FAN_OUT_ONLY = ("instance_id", "batch_size", "port")


def register(sub: Subcommands) -> None:
    p = command(
        sub, "worker", _worker, summary="run the processing stages (fan-out + faust signals)",
        description="Run the processing stages: raw topics → fan-out → mention batches → "
        "signals (windowed volume, sentiment, spikes, late events). Without --stage both run, "
        "as two child processes. Configured by PULSE_* variables.",
    )  # fmt: skip
    p.add_argument(
        "--stage",
        choices=STAGES,
        help="run one stage in this process (deployments scale each on its own)",
    )
    p.add_argument(
        "--no-prepare", action="store_true", help="do not create topics / register schemas first"
    )
    fan_out = p.add_argument_group("fan-out stage options (with --stage fan-out)")
    fan_out.add_argument(
        "--instance-id",
        metavar="NAME",
        help="stable name of this instance, unique among running fan-outs; "
        "exactly_once derives the transactional id from it (default: host name)",
    )
    fan_out.add_argument(
        "--batch-size", type=int, metavar="N", help="records per consume() (default 10000)"
    )
    fan_out.add_argument(
        "--port",
        type=int,
        help="/metrics and /healthz port; 0 picks one, -1 none (default PULSE_FAN_OUT_PORT)",
    )


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    given = [name for name in FAN_OUT_ONLY if getattr(args, name) is not None]
    if given and args.stage != "fan-out":
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        args.parser.error(f"{options}: only with --stage fan-out")
    from pulse.processors.worker import FanOutOptions, run

    fan_out = FanOutOptions(args.instance_id, args.batch_size, args.port)
    return run(settings, args.stage, prepare_first=not args.no_prepare, fan_out=fan_out)

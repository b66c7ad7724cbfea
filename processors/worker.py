"""``pulse worker``: create the topics, then run one processing stage or both.

* ``--stage fan-out`` — :mod:`processors.fanout`: a plain confluent-kafka consumer group over
  the raw topics, writing mention batches (scale up to the raw partition count).
* ``--stage signals`` — :mod:`processors.app`: the faust worker computing windows, ratios and
  spikes (scale up to the symbol partition count).
* no ``--stage`` (a laptop, the demo): both, as two child processes on separate cores,
  stopped together and restarted when one crashes (:mod:`processors.supervisor`).

Nothing heavy is imported here: the supervisor and the fan-out never load faust.
"""

from __future__ import annotations

import argparse
import sys

from pulse.processors.supervisor import FATAL
from pulse.processors.windows import window_config
from pulse.schemas import topics
from pulse.schemas.admin import AuthenticationFailed, check_credentials, ensure_topics
from pulse.schemas.serde import Serde

from pulse.settings import Settings

STAGES = ("fan-out", "signals")
OUTPUTS = (topics.MENTION_BATCHES, topics.VOLUME, topics.SENTIMENT, topics.SPIKES,
           topics.LATE_EVENTS, topics.DEAD_LETTER)


def prepare(settings: Settings) -> None:
    """Create the pipeline's topics and register the schemas the stages write and read."""
    ensure_topics(settings)
    serde = Serde(settings)
    for spec in OUTPUTS:
        serde.register(spec)




def _preflight(settings: Settings, stage: str | None, *, create: bool) -> None:
    """Topics and schemas (if ``create``); before faust starts, whether the cluster takes the
    credentials at all.

    :raises AuthenticationFailed: the cluster refused them.
    """
    if create:
        prepare(settings)
    if stage == "signals" and settings.security_protocol.upper() != "PLAINTEXT":
        # faust reports refused credentials as a crash with a traceback (exit 1, which the
        # supervisor would restart forever): ask the cluster first, in one short probe
        check_credentials(settings)


def main(settings: Settings, argv: list[str]) -> int:
    """``pulse worker``: create topics, register schemas, run one stage or both."""
    parser = argparse.ArgumentParser(
        prog="pulse worker",
        description="Run the processing stages: raw topics → fan-out → mention batches → "
        "signals (windowed volume, sentiment, spikes, late events). Without --stage both run, "
        "as two child processes. Configured by PULSE_* variables.",
    )
    parser.add_argument("--stage", choices=STAGES,
                        help="run one stage in this process (deployments scale each on its own)")
    parser.add_argument("--no-prepare", action="store_true",
                        help="do not create topics / register schemas first")
    args, rest = parser.parse_known_args(argv)
    if rest and args.stage != "fan-out":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        window_config(settings)  # a configuration no stage can run: say so once, exit 2
    except ValueError as exc:
        print(f"pulse worker: {exc}", file=sys.stderr)
        return FATAL
    try:
        _preflight(settings, args.stage, create=not args.no_prepare)
    except AuthenticationFailed as exc:  # one line, and an exit the supervisor won't restart
        print(f"pulse worker: {exc}", file=sys.stderr)
        return FATAL
    if args.stage == "fan-out":
        from pulse.processors import fanout

        return fanout.main(settings, rest)  # its own options: pulse worker --stage fan-out -h
    if args.stage == "signals":
        from pulse.processors.app import build, run

        return run(build(settings), settings.log_level)
    from pulse.processors.supervisor import supervise

    return supervise([["--stage", stage, "--no-prepare"] for stage in STAGES])

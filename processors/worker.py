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

import os
import sys
from dataclasses import dataclass
from typing import NoReturn

from pulse.processors.supervisor import FATAL
from pulse.processors.windows import window_config
from pulse.schemas import topics
from pulse.schemas.admin import AuthenticationFailed, check_credentials, ensure_topics
from pulse.schemas.serde import Serde
from pulse.settings import Settings

STAGES = ("fan-out", "signals")
OUTPUTS = (
    topics.MENTION_BATCHES,
    topics.VOLUME,
    topics.SENTIMENT_WINDOWS,
    topics.SPIKES,
    topics.LATE_EVENTS,
    topics.DEAD_LETTER,
)


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


@dataclass(frozen=True)
class FanOutOptions:
    """The fan-out stage's own options (``pulse worker --stage fan-out``).

    :param instance_id: stable name, unique among running fan-outs (None: the host name).
    :param batch_size: records per consume() (None: :data:`processors.fanout.BATCH_SIZE`).
    :param port: /metrics and /healthz (None: ``PULSE_FAN_OUT_PORT``; 0 picks one; -1 none).
    """

    instance_id: str | None = None
    batch_size: int | None = None
    port: int | None = None


def run(
    settings: Settings,
    stage: str | None = None,
    *,
    prepare_first: bool = True,
    fan_out: FanOutOptions = FanOutOptions(),
) -> int:
    """``pulse worker``: create topics, register schemas, run one stage or both (as two
    supervised child processes); the exit code (:data:`FATAL`: cannot run as configured).

    :param prepare_first: create the topics and register the schemas first.
    """
    try:
        window_config(settings)  # a configuration no stage can run: say so once, exit 2
    except ValueError as exc:
        print(f"pulse worker: {exc}", file=sys.stderr)
        return FATAL
    try:
        _preflight(settings, stage, create=prepare_first)
    except AuthenticationFailed as exc:  # one line, and an exit the supervisor won't restart
        print(f"pulse worker: {exc}", file=sys.stderr)
        return FATAL
    if stage == "fan-out":
        from pulse.processors import fanout

        return fanout.run(settings, instance_id=fan_out.instance_id,
                          batch_size=fan_out.batch_size, port=fan_out.port)  # fmt: skip
    if stage == "signals":
        from pulse.processors.app import build, run

        return run(build(settings), settings.log_level)
    _become_supervisor(settings)


def _become_supervisor(settings: Settings) -> NoReturn:
    """Continue as ``python -m pulse.processors.supervisor``, same pid: the supervisor only
    starts and watches the stages, and a fresh interpreter that loads nothing else stays at
    ~20 MB (this one has the CLI, the admin client and the registry client in its RSS)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(
        sys.executable,
        [sys.executable, "-m", "pulse.processors.supervisor", settings.log_level, *STAGES],
    )

"""The faust app of the signal engine: configuration, topics, tables; ``pulse worker``.

``build(settings)`` declares everything and returns a :class:`Pipeline`; agents, timers and
web pages are attached by :mod:`processors.agents`. Faust's own windowed tables are not used
(their closes need a later event, hopping windows emit only the last step, windowed state
does not survive every rebalance): per-symbol state is plain JSON in changelogged tables and
the watermark and idle closes are ours.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from processors import spikes
from processors.faust_fixes import gaps_exclude_the_record_read, keep_queues_on_redundant_resume
from processors.metrics import Metrics
from processors.windows import WindowConfig, WindowSpec, parse_duration_ms, parse_windows
from schemas import topics
from schemas.admin import ensure_topics
from schemas.serde import Serde
from settings import Settings

log = logging.getLogger(__name__)

GUARANTEES = {"at_least_once", "exactly_once"}
STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}


def symbol_partition(symbol: str, partitions: int) -> int:
    """Mentions partition of a symbol: Kafka's default (murmur2) partitioner on its UTF-8 key.

    Stage 1 sends to this partition explicitly and stage 2 uses it to find which table rows
    belong to a partition, so the two can never disagree.
    """
    return (murmur2(symbol.encode()) & 0x7FFFFFFF) % partitions


def window_config(settings: Settings) -> WindowConfig:
    specs = parse_windows(settings.windows, settings.hopping_windows)
    spike_specs = tuple(
        WindowSpec(parse_duration_ms(s), parse_duration_ms(s))
        for s in settings.spike_windows.split(",")
        if s.strip()
    )
    missing = [s for s in spike_specs if s not in specs]
    if missing:
        raise ValueError(f"spike windows {missing} are not among the windows {specs}")
    return WindowConfig(
        specs=specs,
        grace_ms=settings.grace_ms,
        revision_horizon_ms=settings.revision_horizon_ms,
        spike_specs=spike_specs,
        rule=spikes.SpikeRule(
            min_count=settings.spike_min_count,
            z=settings.spike_z,
            cooldown_windows=settings.spike_cooldown_windows,
            warmup_windows=settings.spike_warmup_windows,
            alpha=settings.spike_alpha,
        ),
    )


@dataclass
class Pipeline:
    """The app and everything the agents need; one per worker process (or per test)."""

    settings: Settings
    app: faust.App
    serde: Serde
    metrics: Metrics
    cfg: WindowConfig
    raw_topic: Any
    mentions_topic: Any
    out_topics: dict[str, Any]
    seen: Any  # Table: "m<id>" / "s<id>" → Seen row
    symbols: Any  # Table: symbol → SymbolState row
    extra: dict[str, Any] = field(default_factory=dict)

    def name(self, spec: topics.TopicSpec) -> str:
        return spec.full_name(self.settings)


def _state_dir(settings: Settings) -> Path:
    return Path(settings.state_dir).expanduser() if settings.state_dir else (
        settings.local_home_path / "faust"
    )


def build(settings: Settings) -> Pipeline:
    """Declare the faust app, its topics and tables, and attach the agents."""
    if settings.processing_guarantee not in GUARANTEES:
        raise ValueError(f"processing_guarantee must be one of {sorted(GUARANTEES)}")
    if settings.store not in STORES:
        raise ValueError(f"store must be one of {sorted(STORES)}")
    cfg = window_config(settings)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{h}" for h in settings.bootstrap_servers.split(",")],
        store=STORES[settings.store],
        processing_guarantee=settings.processing_guarantee,
        datadir=str(_state_dir(settings)),
        web_port=settings.web_port,
        web_enabled=True,
        topic_partitions=settings.symbol_partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        producer_linger=0.005,  # a few ms of batching: many small records per event
        table_standby_replicas=0,
        # a SIGKILLed worker's partitions move after 10 s instead of faust's default 60 s
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        consumer_auto_offset_reset="earliest",
    )

    keep_queues_on_redundant_resume(app.flow_control)  # faust-streaming #596
    gaps_exclude_the_record_read()

    def topic(spec: topics.TopicSpec) -> Any:
        return app.topic(
            spec.full_name(settings),
            partitions=spec.partitions(settings),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    raw_topic = app.topic(
        topics.MESSAGES.full_name(settings),
        topics.SENTIMENT_EVENTS.full_name(settings),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    pipeline = Pipeline(
        settings=settings,
        app=app,
        serde=Serde(settings),
        metrics=Metrics(),
        cfg=cfg,
        raw_topic=raw_topic,
        mentions_topic=topic(topics.MENTIONS),
        out_topics={
            spec.name: topic(spec)
            for spec in (topics.VOLUME, topics.SENTIMENT, topics.SPIKES, topics.LATE_EVENTS,
                         topics.DEAD_LETTER)
        },
        seen=app.Table(
            "seen", key_type=str, partitions=settings.raw_partitions
        ),
        symbols=app.Table(
            "symbols", key_type=str, partitions=settings.symbol_partitions
        ),
    )
    from processors import agents  # attaches agents, timers and pages to this app

    agents.attach(pipeline)
    return pipeline


def prepare(settings: Settings) -> None:
    """Create the pipeline's topics and register the schemas the worker writes and reads."""
    ensure_topics(settings)
    serde = Serde(settings)
    for spec in (topics.MENTIONS, topics.VOLUME, topics.SENTIMENT, topics.SPIKES,
                 topics.LATE_EVENTS, topics.DEAD_LETTER):
        serde.register(spec)


def run(pipeline: Pipeline, loglevel: str = "info") -> int:
    """Run the worker until it is stopped (SIGTERM/SIGINT); returns its exit code."""
    # mode spells levels crit/error/warn/info/debug; anything else silently means "all"
    level = {"critical": "crit", "warning": "warn"}.get(loglevel.lower(), loglevel.lower())
    worker = faust.Worker(pipeline.app, loglevel=level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def main(settings: Settings, argv: list[str]) -> int:
    """``pulse worker``: create topics, register schemas, run the faust worker."""
    parser = argparse.ArgumentParser(
        prog="pulse worker",
        description="Run the Faust signal engine: raw topics → mentions → windowed volume, "
        "sentiment, spikes and late events. Configured by PULSE_* variables.",
    )
    parser.add_argument("--no-prepare", action="store_true",
                        help="do not create topics / register schemas first")
    args = parser.parse_args(argv)
    if not args.no_prepare:
        prepare(settings)
    pipeline = build(settings)
    return run(pipeline, settings.log_level)


"""The faust app of the signals stage (``pulse worker --stage signals``).

``build(settings)`` declares its app, input topic and table and attaches the agent
(:mod:`processors.agents`); ``run`` runs it. Faust's own windowed tables are not used (their
closes need a later event of the same key, hopping windows emit only the last step, windowed
state does not survive every rebalance): per-symbol state is rows the engine encodes, in a
changelogged table, and the watermark is ours. ``pulse worker`` itself is :mod:`processors.worker`.
"""

from __future__ import annotations

import gc
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from pulse import health, kafka
from pulse.processors.faust_fixes import (
    gaps_exclude_the_record_read,
    keep_queues_on_redundant_resume,
)
from pulse.processors.metrics import Metrics
from pulse.processors.windows import WindowConfig, window_config
from pulse.schemas import topics
from pulse.schemas.serde import Serde
from pulse.settings import Settings

log = logging.getLogger(__name__)

GUARANTEES = {"at_least_once", "exactly_once"}
STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}


def broker_credentials(settings: Settings) -> Any:
    """faust's (aiokafka's) view of the same security settings every other client uses."""
    protocol = settings.security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_ca_location or None)
        if settings.ssl_certificate_location:
            context.load_cert_chain(
                settings.ssl_certificate_location, settings.ssl_key_location or None
            )
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


@dataclass
class Pipeline:
    """The signals app and everything its agent needs; one per worker process (or test)."""

    settings: Settings
    app: faust.App
    serde: Serde
    metrics: Metrics
    cfg: WindowConfig
    mentions_topic: Any
    symbols: Any  # Table: symbol / pane chunk / partition rows (processors.engine)
    extra: dict[str, Any] = field(default_factory=dict)
    # /readyz, run on the worker's event loop; the agent sets it (processors/agents.py)
    readiness: Callable[[], Mapping[str, Any]] = lambda: {"ready": False}

    def name(self, spec: topics.TopicSpec) -> str:
        return spec.full_name(self.settings)


def _state_dir(settings: Settings) -> Path:
    return (
        Path(settings.state_dir).expanduser()
        if settings.state_dir
        else (settings.local_home_path / "faust")
    )


def build(settings: Settings) -> Pipeline:
    """Declare the faust app, its input topic and table, and attach the agent."""
    if settings.processing_guarantee not in GUARANTEES:
        raise ValueError(f"processing_guarantee must be one of {sorted(GUARANTEES)}")
    if settings.store not in STORES:
        raise ValueError(f"store must be one of {sorted(STORES)}")
    cfg = window_config(settings)
    app = faust.App(
        settings.app_id,
        # acks, linger, session timeout and offset reset as every other client's (pulse.kafka)
        **kafka.faust_broker_options(settings),
        broker_credentials=broker_credentials(settings),
        store=STORES[settings.store],
        processing_guarantee=settings.processing_guarantee,
        datadir=str(_state_dir(settings)),
        # /healthz, /readyz and /metrics on web_port come from pulse.health (see run)
        web_enabled=False,
        topic_partitions=settings.symbol_partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        table_standby_replicas=0,
        # a mention-batch record carries thousands of mentions: 64 of them waiting (faust's
        # default is 4096) and 256 KB fetches keep a stage far behind its fan-out (a backfill)
        # from holding ~50 MB of them; the agent takes at most 200 per batch anyway
        stream_buffer_maxsize=64,
        consumer_max_fetch_size=256 * 1024,
    )
    keep_queues_on_redundant_resume(app.flow_control)  # faust-streaming #596
    gaps_exclude_the_record_read()
    spec = topics.MENTION_BATCHES
    pipeline = Pipeline(
        settings=settings,
        app=app,
        serde=Serde(settings),
        metrics=Metrics(),
        cfg=cfg,
        mentions_topic=app.topic(
            spec.full_name(settings),
            partitions=spec.partitions(settings),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        ),
        # values are bytes the engine encodes (processors.engine.PartitionEngine.persist)
        symbols=app.Table(
            "symbols", key_type=str, value_type=bytes, partitions=settings.symbol_partitions
        ),
    )
    from pulse.processors import agents  # attaches the agent, timers and pages to this app

    agents.attach(pipeline)
    return pipeline


def run(pipeline: Pipeline, loglevel: str = "info") -> int:
    """Run the signals worker until it is stopped (SIGTERM/SIGINT); returns its exit code."""
    # mode spells levels crit/error/warn/info/debug; anything else silently means "all"
    level = {"critical": "crit", "warning": "warn"}.get(loglevel.lower(), loglevel.lower())
    worker = faust.Worker(pipeline.app, loglevel=level, quiet=True)
    # One server for every process (pulse.health) instead of faust's aiohttp one: it answers
    # from a thread of its own, and runs its checks on the worker's loop, so a loop that no
    # longer turns fails the probes as it did when the server ran on that loop.
    server = health.start(
        pipeline.settings,
        pipeline.settings.web_port,
        pipeline.metrics,
        live=health.on_loop(worker.loop, lambda: True),
        ready=health.on_loop(worker.loop, pipeline.readiness),
    )
    # The engine keeps millions of long-lived objects (panes, tallies); the collector's full
    # passes over them cost 30-40 % of engine time at default thresholds. Everything built at
    # start-up is frozen out of collections, and young collections run less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if server is not None:
            server.stop()
    return 0

"""Prometheus metrics of one producer process, and its /healthz + /metrics server."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulse import health
from pulse.settings import Settings


class ProducerMetrics(health.Metrics):
    """What a producer counts, by ``source`` (one upstream stream or poller per process)."""

    def __init__(self) -> None:
        super().__init__()
        self.events = self.counter(
            "pulse_producer_events_total", "Records acknowledged by Kafka.", ["source", "topic"]
        )
        self.bytes = self.counter(
            "pulse_producer_bytes_total", "Upstream payload bytes received.", ["source"]
        )
        self.reconnects = self.counter(
            "pulse_producer_reconnects_total",
            "Upstream (re)connection attempts after a failure.",
            ["source", "cause"],
        )
        self.dead_letters = self.counter(
            "pulse_producer_dead_letters_total",
            "Inputs sent to the dead-letter topic.",
            ["source", "reason"],
        )
        self.delivery_errors = self.counter(
            "pulse_producer_delivery_errors_total",
            "Records Kafka did not accept.",
            ["source", "topic"],
        )
        self.duplicates = self.counter(
            "pulse_producer_duplicates_skipped_total",
            "Upstream items skipped as already written.",
            ["source"],
        )
        self.last_seq = self.gauge(
            "pulse_producer_last_seq_id",
            "Last Firehose seq_id acknowledged (float: approximate).",
            ["source"],
        )
        self.last_event = self.gauge(
            "pulse_producer_last_event_timestamp_seconds",
            "Wall clock of the last upstream event.",
            ["source"],
        )


# One set per process: the producer modules count into it wherever they are.
METRICS = ProducerMetrics()
EVENTS = METRICS.events
BYTES = METRICS.bytes
RECONNECTS = METRICS.reconnects
DEAD_LETTERS = METRICS.dead_letters
DELIVERY_ERRORS = METRICS.delivery_errors
DUPLICATES = METRICS.duplicates
LAST_SEQ = METRICS.last_seq
LAST_EVENT = METRICS.last_event


def serve(
    settings: Settings, port: int, live: Callable[[], Mapping[str, Any]]
) -> health.HealthServer | None:
    """``/healthz`` (``live()`` holds ``healthy`` and the producer's figures), ``/readyz``
    (the same) and ``/metrics`` on ``settings.bind_host``:``port``; 0 picks a free port,
    a negative one is off (None)."""
    return health.start(settings, port, METRICS, live=live)

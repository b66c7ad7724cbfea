"""Prometheus metrics of the signal engine, one registry per app so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "pulse_events_in", "Input records read, by topic.", ["topic"], registry=r
        )
        self.mentions = Counter(
            "pulse_mentions_in", "Mentions read from mention batches.", registry=r
        )
        self.windows_emitted = Counter(
            "pulse_windows_emitted", "Final window results, by window size (ms).", ["size_ms"],
            registry=r,
        )
        self.corrections = Counter(
            "pulse_window_corrections", "Corrected window results (revision > 0).", registry=r
        )
        self.late_events = Counter(
            "pulse_late_events", "Mentions later than grace, by kind.", ["kind"], registry=r
        )
        self.dead_letters = Counter(
            "pulse_dead_letters", "Records sent to the dead-letter topic, by reason.", ["reason"],
            registry=r,
        )
        self.spikes = Counter("pulse_spikes", "Spikes fired.", registry=r)
        self.idle_closes = Counter(
            "pulse_idle_closes", "Idle closes: every raw partition quiet, open windows closed.",
            registry=r,
        )
        self.stall_seeks = Counter(
            "pulse_stall_seeks", "Assigned partitions found unread with records waiting, and "
            "sought to their committed offset (processors/watchdog.py).", registry=r,
        )
        self.offset_gaps = Counter(
            "pulse_offset_gaps", "Records the consumer skipped (not delivered to the agent) "
            "and that were sought back to and read again, by topic; logged as an error.",
            ["topic"], registry=r,
        )
        self.repeats = Counter(
            "pulse_repeated_records", "Records delivered again within one assignment and not "
            "processed twice, by topic.", ["topic"], registry=r,
        )
        self.lag_ms = Gauge(
            "pulse_processing_lag_ms", "Wall clock minus the timestamp of the last record read.",
            ["stage"], registry=r,
        )
        self.watermark_ms = Gauge(
            "pulse_watermark_ms", "Watermark (event time) of each symbol partition.", ["partition"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics of the signal engine, one registry per app so tests can run several."""

from __future__ import annotations

from pulse import health


class Metrics(health.Metrics):
    """What the signals stage counts; ``/metrics`` on ``web_port`` (processors/app.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.events_in = self.counter("pulse_events_in", "Input records read, by topic.", ["topic"])
        self.mentions = self.counter("pulse_mentions_in", "Mentions read from mention batches.")
        self.windows_emitted = self.counter(
            "pulse_windows_emitted", "Final window results, by window size (ms).", ["size_ms"]
        )
        self.corrections = self.counter(
            "pulse_window_corrections", "Corrected window results (revision > 0)."
        )
        self.late_events = self.counter(
            "pulse_late_events", "Mentions later than grace, by kind.", ["kind"]
        )
        self.dead_letters = self.counter(
            "pulse_dead_letters", "Records sent to the dead-letter topic, by reason.", ["reason"]
        )
        self.spikes = self.counter("pulse_spikes", "Spikes fired.")
        self.idle_closes = self.counter(
            "pulse_idle_closes", "Idle closes: every raw partition quiet, open windows closed."
        )
        self.stall_seeks = self.counter(
            "pulse_stall_seeks",
            "Assigned partitions found unread with records waiting, and "
            "sought to their committed offset (processors/watchdog.py).",
        )
        self.offset_gaps = self.counter(
            "pulse_offset_gaps",
            "Records the consumer skipped (not delivered to the agent) "
            "and that were sought back to and read again, by topic; logged as an error.",
            ["topic"],
        )
        self.repeats = self.counter(
            "pulse_repeated_records",
            "Records delivered again within one assignment and not processed twice, by topic.",
            ["topic"],
        )
        self.lag_ms = self.gauge(
            "pulse_processing_lag_ms",
            "Wall clock minus the timestamp of the last record read.",
            ["stage"],
        )
        self.watermark_ms = self.gauge(
            "pulse_watermark_ms", "Watermark (event time) of each symbol partition.", ["partition"]
        )

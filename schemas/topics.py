"""Every topic the pipeline reads or writes: name, key, value schema, partitions, cleanup.

Names here are base names; :meth:`settings.Settings.topic` adds the configured prefix.
Subjects follow TopicNameStrategy (``<topic>-value``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pulse.settings import Settings

DAY_MS = 86_400_000


class Keyed(Enum):
    """What a topic's key is; decides which partition count applies."""

    UPSTREAM_ID = "upstream id"
    SYMBOL = "symbol"
    SOURCE = "source"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    schema_file: str
    keyed: Keyed
    config: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def full_name(self, settings: Settings) -> str:
        return settings.topic(self.name)

    def value_subject(self, settings: Settings) -> str:
        return f"{self.full_name(settings)}-value"  # TopicNameStrategy

    def partitions(self, settings: Settings) -> int:
        if self.keyed is Keyed.SYMBOL:
            return settings.symbol_partitions
        return settings.raw_partitions


def _delete(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * DAY_MS)}


_COMPACT = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}

# raw topics: what producers write
MESSAGES = TopicSpec("stocktwits.messages", "message_event.avsc", Keyed.UPSTREAM_ID, _delete(7))
LIKES = TopicSpec("stocktwits.likes", "like_event.avsc", Keyed.UPSTREAM_ID, _delete(7))
SOCIAL = TopicSpec("stocktwits.social", "social_event.avsc", Keyed.UPSTREAM_ID, _delete(7))
RAW_SENTIMENT = TopicSpec(
    "stocktwits.sentiment", "sentiment_event.avsc", Keyed.UPSTREAM_ID, _delete(7)
)
TRENDING = TopicSpec("stocktwits.trending", "trending_symbol.avsc", Keyed.SYMBOL, _COMPACT)
SENTIMENT_CHART = TopicSpec(
    "stocktwits.sentiment-chart", "sentiment_chart_point.avsc", Keyed.SYMBOL, _COMPACT
)
DEAD_LETTER = TopicSpec("stocktwits.deadletter", "dead_letter.avsc", Keyed.SOURCE, _delete(14))
# Firehose resume points (producers/firehose.py), so a restarted producer needs no local disk
CHECKPOINTS = TopicSpec(
    "stocktwits.firehose-checkpoints", "firehose_checkpoint.avsc", Keyed.SOURCE, _COMPACT
)
# processor topics
# what the fan-out writes and the signals stage reads: mentions batched per symbol partition
MENTION_BATCHES = TopicSpec("pulse.mention-batches", "mention_batch.avsc", Keyed.SYMBOL, _delete(3))
VOLUME = TopicSpec("pulse.volume", "window_volume.avsc", Keyed.SYMBOL, _delete(30))
SENTIMENT_WINDOWS = TopicSpec("pulse.sentiment", "window_sentiment.avsc", Keyed.SYMBOL, _delete(30))
SPIKES = TopicSpec("pulse.spikes", "spike.avsc", Keyed.SYMBOL, _delete(30))
LATE_EVENTS = TopicSpec("pulse.late-events", "late_mention.avsc", Keyed.SYMBOL, _delete(7))

ALL: tuple[TopicSpec, ...] = (
    MESSAGES,
    LIKES,
    SOCIAL,
    RAW_SENTIMENT,
    TRENDING,
    SENTIMENT_CHART,
    DEAD_LETTER,
    CHECKPOINTS,
    MENTION_BATCHES,
    VOLUME,
    SENTIMENT_WINDOWS,
    SPIKES,
    LATE_EVENTS,
)


def by_name(name: str, settings: Settings) -> TopicSpec:
    """The spec of a full topic name (prefix included)."""
    for spec in ALL:
        if spec.full_name(settings) == name or spec.name == name:
            return spec
    raise KeyError(f"unknown topic {name!r}; known: {', '.join(s.name for s in ALL)}")

"""Dead-letter records: what was rejected, byte for byte, and why."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pulse.kafka import Headers


class Reason(StrEnum):
    """Machine-readable codes for ``DeadLetter.reason`` and the ``dlq.reason`` header."""

    INVALID_JSON = "invalid_json"  # not JSON, truncated, or not UTF-8
    INVALID_RECORD = "invalid_record"  # JSON, but a required field is missing or mistyped
    UNKNOWN_OBJECT = "unknown_object"  # Firehose object type we do not know
    SERIALIZE_FAILED = "serialize_failed"  # Avro encoding or registry rejected it
    DELIVERY_FAILED = "delivery_failed"  # broker did not accept it after retries
    DECODE_FAILED = "decode_failed"  # consumer could not decode an input record
    PROCESS_FAILED = "process_failed"  # a processor raised on a record
    TOO_LARGE = "too_large"  # over the size limit


def dead_letter(
    raw: bytes | None,
    *,
    source: str,
    stage: str,
    reason: Reason,
    error: str,
    source_topic: str | None = None,
    source_partition: int | None = None,
    source_offset: int | None = None,
    time_ms: int | None = None,
) -> dict[str, Any]:
    """A ``DeadLetter`` record (schemas/dead_letter.avsc)."""
    return {
        "raw": raw,
        "source": source,
        "stage": stage,
        "reason": reason.value,
        "error": error[:2000],
        "time_ms": int(time.time() * 1000) if time_ms is None else time_ms,
        "source_topic": source_topic,
        "source_partition": source_partition,
        "source_offset": source_offset,
    }


def headers(reason: Reason, stage: str, source_topic: str | None) -> Headers:
    """Kafka headers that let an operator filter the dead-letter topic without decoding."""
    out: Headers = [("dlq.reason", reason.value.encode()), ("dlq.stage", stage.encode())]
    if source_topic:
        out.append(("dlq.source_topic", source_topic.encode()))
    return out

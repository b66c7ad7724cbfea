"""Kafka records as JSON (pure): what ``pulse tail`` prints and the board and alerts read."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class Meta:
    """Where a record sits in Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: str | None


def key_text(key: bytes | None) -> str | None:
    """Keys are UTF-8 strings (README, Contracts); anything else is shown base64-encoded."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(key).decode()


def jsonable(value: Any) -> Any:
    """An Avro-decoded value with bytes and enums made JSON-safe (bytes: UTF-8 if it is)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, Enum):
        return value.value
    return value


def json_line(meta: Meta, value: Any, *, value_only: bool = False) -> str:
    """One line of ``pulse tail`` output."""
    if value_only:
        return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))
    doc = {
        "topic": meta.topic,
        "partition": meta.partition,
        "offset": meta.offset,
        "timestamp_ms": meta.timestamp_ms,
        "key": meta.key,
        "value": jsonable(value),
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def quiet_http_logs() -> None:
    """The registry client logs every HTTP request at INFO: noise on a screen or a pipe."""
    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)


# C0 and C1 controls (ESC starts terminal escape sequences), DEL, and the bidirectional
# overrides and isolates that make text display in another order than it is stored
_UNPRINTABLE = dict.fromkeys(
    [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def printable(text: object, max_len: int = 32) -> str:
    """Upstream text made safe to show: control characters and ESC removed, cut to
    ``max_len`` characters (an ellipsis marks the cut). Markup is the caller's business:
    render the result as plain text (``rich.text.Text``), never as markup."""
    clean = str(text).translate(_UNPRINTABLE)
    return clean if len(clean) <= max_len else clean[: max_len - 1] + "…"

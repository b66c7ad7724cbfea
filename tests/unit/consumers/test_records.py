from __future__ import annotations

import json
from enum import Enum

import pytest

from pulse.consumers.records import Meta, json_line, jsonable, key_text


class Color(Enum):
    RED = "RED"


@pytest.mark.parametrize(
    "key, text", [(None, None), (b"AAPL", "AAPL"), (b"\xff\x00", "base64:/wA=")]
)
def test_key_text(key: bytes | None, text: str | None) -> None:
    assert key_text(key) == text


def test_jsonable_makes_bytes_and_enums_json_safe_recursively() -> None:
    value = {"raw": b'{"a":1}', "bin": b"\x89PNG", "c": Color.RED, "xs": [b"x", (1, 2)]}
    assert jsonable(value) == {
        "raw": '{"a":1}', "bin": "base64:iVBORw==", "c": "RED", "xs": ["x", [1, 2]]
    }  # fmt: skip


def test_json_line_with_and_without_metadata() -> None:
    meta = Meta("pulse.volume", 2, 17, 1_700_000_000_000, "AAPL")
    line = json_line(meta, {"symbol": "AAPL", "n": 1})
    assert json.loads(line) == {
        "topic": "pulse.volume", "partition": 2, "offset": 17, "timestamp_ms": 1_700_000_000_000,
        "key": "AAPL", "value": {"symbol": "AAPL", "n": 1},
    }  # fmt: skip
    assert "\n" not in line
    assert json.loads(json_line(meta, {"s": "é"}, value_only=True)) == {"s": "é"}

"""The fan-out's MessageEvent reader: the native projection against fastavro, record by record.

Every frame here is read both ways, by ``pulse_native.MessageReader`` (through
:class:`~pulse.processors.message_reader.MessageReader`) and by fastavro reduced with
:func:`~pulse.processors.mentions.message_parts`, and the two must agree: the same parts, or
both refuse the bytes.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import random
from typing import Any

import fastavro
import orjson
import pytest

from pulse.processors import message_reader
from pulse.processors.mentions import MessageParts, message_parts
from pulse.processors.message_reader import MessageReader
from pulse.producers import parse
from pulse.producers.synthetic import Config, Generator, envelopes
from pulse.schemas.serde import load_schema, wire_decoder, wire_encoder
from pulse.schemas.topics import MESSAGES
from tests.support.harness import message_event
from tests.unit.producers.mutations import mutate_bytes
from tests.unit.producers.test_native import REAL

SCHEMA = load_schema(MESSAGES.schema_file)
SCHEMA_ID = 4242
ENCODE = wire_encoder(SCHEMA_ID, SCHEMA)


def evolved_schema() -> dict[str, Any]:
    """The schema with a field added, as a later producer version might register."""
    schema = copy.deepcopy(SCHEMA)
    schema["fields"].insert(2, {"name": "lang", "type": ["null", "string"], "default": None})
    return schema


SCHEMAS = {SCHEMA_ID: SCHEMA, SCHEMA_ID + 1: evolved_schema()}
DECODE = wire_decoder(SCHEMA, SCHEMAS.__getitem__)


def reader(use_native: bool = True) -> MessageReader:
    return MessageReader(SCHEMA, SCHEMAS.__getitem__, DECODE, use_native=use_native)


NATIVE, SLOW = reader(), reader(use_native=False)


def outcome(read: MessageReader, frame: bytes) -> MessageParts | str:
    try:
        return read(frame)
    except (ValueError, EOFError, IndexError, KeyError):  # fastavro's refusals, and ours
        return "refused"


def agree(frame: bytes) -> MessageParts | str:
    got, want = outcome(NATIVE, frame), outcome(SLOW, frame)
    if got == "refused" and want != "refused":
        # the one difference: fastavro takes a negative union or enum index as a Python
        # index from the end (corrupt bytes read as a record); the native reader refuses it
        with pytest.raises(ValueError, match=r"index -\d+ out of range"):
            NATIVE(frame)
        return got
    assert (got, repr(got)) == (want, repr(want)), frame[:200]
    return got


def records() -> list[dict[str, Any]]:
    """MessageEvents as the producers write them: real captures, the synthetic stream,
    destroys with and without a body."""
    out = []
    for raw in REAL:
        spec, _, record = parse.firehose_event(raw)
        if spec is MESSAGES:
            out.append(record)
    synthetic = itertools.islice(envelopes(iter(Generator(Config(), 1_656_460_800_000))), 1000)
    for raw in synthetic:
        spec, _, record = parse.firehose_event(orjson.dumps(orjson.loads(raw)))
        if spec is MESSAGES:
            out.append(record)
    out.append(message_event(1, 5, ["A"], action="destroy", body=False, event_time_ms=9))
    out.append(message_event(2, 5, ["A", "B"], action="destroy"))
    return out


RECORDS = records()


def test_native_reader_is_installed() -> None:
    # `make test` installs it (pip install ./native); without it the fan-out is ~2x slower
    assert message_reader.native_available(), "pulse_native missing: pip install ./native"


def test_real_and_synthetic_messages_read_the_same() -> None:
    assert len(RECORDS) > 1000
    for record in RECORDS:
        parts = agree(ENCODE(record))
        assert parts == message_parts(record)  # and what the producers wrote


@pytest.mark.parametrize(
    "symbols,sentiment,user_id",
    [
        ([], None, 0),
        ([" AAPL ", "AAPL", "", "aapl"], "Bearish", -1),
        (["ÉTÉ.X", "😀", "A" * 300], "Bullish", 2**63 - 1),
        ([f"S{i}" for i in range(500)], None, -(2**63)),
    ],
)
def test_odd_values_read_the_same(symbols: list[str], sentiment: str | None, user_id: int) -> None:
    record = message_event(2**62, -1, symbols, user_id, sentiment)
    record["message"]["links"] = [{"url": "u", "title": None}] * 3
    record["message"]["body"] = "x" * 70_000
    assert agree(ENCODE(record)) == message_parts(record)


def test_any_truncation_is_refused_or_equal() -> None:
    rng = random.Random(5)
    for record in rng.sample(RECORDS, 40):
        frame = ENCODE(record)
        for end in range(len(frame)):
            agree(frame[:end])


def test_random_byte_mutations_agree() -> None:
    """Bit flips and inserted or lost bytes anywhere after the header: where fastavro reads a
    record, the native reader reads the same parts; where it refuses, so does the reader."""
    rng = random.Random(11)
    alphabet = bytes(range(256))
    frames = [ENCODE(r) for r in RECORDS]
    outcomes = {"refused": 0, "read": 0}
    for _ in range(20_000):
        frame = rng.choice(frames)
        mutated = frame[:5] + mutate_bytes(rng, frame[5:], alphabet)
        outcomes["refused" if agree(mutated) == "refused" else "read"] += 1
    assert min(outcomes.values()) > 1_000, outcomes  # both kinds were exercised


def test_frames_that_are_no_frame_are_refused() -> None:
    for frame in (b"", b"\x00\x00", b"\x01" + ENCODE(RECORDS[0])[1:]):
        assert agree(frame) == "refused"


def test_another_schema_version_is_read_by_fastavro() -> None:
    record = {**RECORDS[0], "lang": "en"}
    out = io.BytesIO()
    out.write(b"\x00" + (SCHEMA_ID + 1).to_bytes(4, "big"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(evolved_schema()), record)
    assert agree(out.getvalue()) == message_parts(RECORDS[0])


def test_the_native_plan_refuses_shapes_it_does_not_read() -> None:
    assert message_reader.native is not None
    for path, shape in [
        (("message_id",), "string"),
        (("action",), "string"),
        (("event_time_ms",), "double"),
    ]:
        schema = copy.deepcopy(SCHEMA)
        next(f for f in schema["fields"] if f["name"] == path[0])["type"] = shape
        with pytest.raises(ValueError, match="not readable natively"):
            message_reader.native.MessageReader(json.dumps(schema))
    without = copy.deepcopy(SCHEMA)
    without["fields"] = [f for f in without["fields"] if f["name"] != "message"]
    with pytest.raises(ValueError, match="no field"):
        message_reader.native.MessageReader(json.dumps(without))

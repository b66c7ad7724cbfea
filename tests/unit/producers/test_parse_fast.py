"""producers.parse's fast path gives exactly the careful path's records and errors.

The careful path is the specification; the fast path (well-formed Message creates, built
without a helper call per field) must return an equal record for every input it accepts and
leave every other input to the careful path. Checked here on real and sample messages and on
each field of a message set to each kind of odd value.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from pulse.producers import parse
from pulse.producers.synthetic import Config, Generator, envelopes
from tests.unit.producers.mutations import mutate_bytes
from tests.unit.producers.test_parse import REAL_FILES, SAMPLE_MESSAGE, envelope

ODD_VALUES: list[Any] = [
    None,
    "",
    "12",
    "-3",
    " 7 ",
    "x",
    "Bullish",
    "2017-02-01T19:16:54Z",
    "2017-02-01T19:16:54",
    0,
    -1,
    7,
    1 << 63,
    1 << 64,
    1.0,
    1.5,
    -0.0,
    math.inf,
    math.nan,
    True,
    False,
    [],
    ["a", 1, None],
    [{"symbol": "A"}],
    {},
    {"x": 1},
    {"basic": "Bearish", "url": "u", "total": 3, "id": 9, "symbol": "S"},
    OrderedDict(symbol="A", id=1),
]
MISSING = object()

MESSAGE_PATHS: list[tuple[Any, ...]] = list(
    dict.fromkeys(
        [
            *[(k,) for k in SAMPLE_MESSAGE],
            *[
                (k,)
                for k in (
                    "sentiment",
                    "likes",
                    "reshares",
                    "reshare_message",
                    "links",
                    "prices",
                    "mentioned_users",
                    "conversation",
                    "source",
                    "symbols",
                    "entities",
                )
            ],
            *[("user", k) for k in SAMPLE_MESSAGE["user"]],
            *[
                ("user", k)
                for k in (
                    "official",
                    "identity",
                    "classification",
                    "join_date",
                    "watchlist_stocks_count",
                )
            ],
            *[("symbols", 0, k) for k in SAMPLE_MESSAGE["symbols"][0]],
            *[
                ("symbols", 0, k)
                for k in ("sector", "industry", "trending", "trending_score", "watchlist_count")
            ],
            ("symbols", 1),
            ("entities", "sentiment"),
            ("entities", "sentiment", "basic"),
            ("entities", "chart"),
            ("source", "id"),
            ("source", "title"),
            ("source", "url"),
        ]
    )
)
ENVELOPE_PATHS: list[tuple[Any, ...]] = [("object",), ("action",), ("time",), ("seq_id",)]


@contextmanager
def careful_only() -> Iterator[None]:
    """The parse functions with their fast paths switched off: the reference behaviour."""

    def unusual(*_: Any, **__: Any) -> Any:
        raise parse._Unusual

    saved = parse._message_fast, parse._message_create_fast
    parse._message_fast = parse._message_create_fast = unusual  # type: ignore[assignment]
    try:
        yield
    finally:
        parse._message_fast, parse._message_create_fast = saved


def outcome(fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return ("ok", fn(arg))
    except parse.ParseError as exc:
        return ("error", exc.reason, str(exc))


def same_as_careful(fn: Callable[[Any], Any], arg: Any) -> None:
    got = outcome(fn, copy.deepcopy(arg))
    with careful_only():
        want = outcome(fn, copy.deepcopy(arg))
    # repr as well: equal values of another type (1 vs 1.0 vs True) must not pass either
    assert (got, repr(got)) == (want, repr(want)), arg


def with_value(root: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(root)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
        if not isinstance(node, (dict, list)):
            return out
    last = path[-1]
    if value is MISSING:
        if isinstance(node, dict):
            node.pop(last, None)
        elif isinstance(node, list) and last < len(node):
            del node[last]
    elif isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list):
        if last < len(node):
            node[last] = value
        else:
            node.append(value)
    return out


def real_messages() -> list[dict[str, Any]]:
    out = []
    for path in REAL_FILES:
        doc = json.loads(path.read_text())
        messages = doc.get("messages", []) if isinstance(doc, dict) else doc
        out += [m for m in messages if isinstance(m, dict)]
    return out


def test_real_messages_take_the_fast_path_and_match() -> None:
    messages = real_messages()
    assert messages
    fast = 0
    for m in messages:
        try:
            parse._message_fast(copy.deepcopy(m))
            fast += 1
        except (parse._Unusual, parse.ParseError):
            pass
        same_as_careful(parse.message, m)
        same_as_careful(parse.firehose_event, orjson.dumps(envelope("Message", m)))
    assert fast >= 0.9 * len(messages)  # the fast path is the common path


def test_synthetic_stream_takes_the_fast_paths_and_matches() -> None:
    # what bench/producers_bench.py measures
    for line in itertools.islice(envelopes(iter(Generator(Config(), 0))), 500):
        parse._message_create_fast(orjson.loads(line))
        same_as_careful(parse.firehose_event, line)


@pytest.mark.parametrize("path", MESSAGE_PATHS, ids=lambda p: ".".join(map(str, p)))
def test_odd_message_fields_match_the_careful_path(path: tuple[Any, ...]) -> None:
    for value in [MISSING, *ODD_VALUES]:
        data = with_value(SAMPLE_MESSAGE, path, value)
        env = envelope("Message", data)
        same_as_careful(parse.firehose_event, env)  # already-decoded input
        same_as_careful(parse.firehose_event, json.dumps(env).encode())  # NaN: invalid JSON
        same_as_careful(parse.message, data)
        # created_at equal to the envelope time (the time_ms reuse) and different from it
        same_as_careful(parse.firehose_event, dict(env, time=data.get("created_at")))


@pytest.mark.parametrize("path", ENVELOPE_PATHS, ids=lambda p: ".".join(map(str, p)))
def test_odd_envelope_fields_match_the_careful_path(path: tuple[Any, ...]) -> None:
    for value in [MISSING, *ODD_VALUES, "destroy", "create", "Message", "LikeMessage"]:
        env = with_value(envelope("Message", SAMPLE_MESSAGE), path, value)
        same_as_careful(parse.firehose_event, env)
        same_as_careful(parse.firehose_event, json.dumps(env).encode())


@pytest.mark.parametrize(
    "text",
    [
        b'"z": 1e400',  # orjson: a number beyond a double is invalid JSON
        b'"z": -1.7976931348623159e308',
        b'"z": ' + b"9" * 400,
        b'"z": 123456789012345678901234567890',
        b'"z": "\xff"',  # invalid UTF-8, where msgspec skips without looking
        b'"z": "\xc0\xaf"',
        b'"z": "\xed\xa0\x80"',
        b'"z": "\\ud800"',
        b'"z": "\xf0\x9f\x98\x80 ok"',
        b'"z": [[[[[[1]]]]]]',
        b'"z": {"a": 1, "a": 2}',
        b'"giphy": null',
        b'"body": "dup body"',  # a duplicate key: the last one wins, on every path
        b'"id": 7',
        b'"id": 9223372036854775808',
        b'"id": 18446744073709551616',
        b'"id": -9223372036854775809',
        b'"likes": {"total": 18446744073709551617}',
        b'"likes": {"total": 3}',
        b'"created_at": "2017-02-01T19:19:18Z"',
    ],
)
@pytest.mark.parametrize("where", ["data", "user", "symbol", "envelope"])
def test_raw_json_edge_cases_match_the_careful_path(text: bytes, where: str) -> None:
    """Text spliced into the JSON itself: cases a dict cannot express (overflowing numbers,
    invalid UTF-8, duplicate keys), for any fast route that decodes bytes itself."""
    raw = orjson.dumps(envelope("Message", SAMPLE_MESSAGE))
    anchor = {
        "data": b'"data":{',
        "user": b'"user":{',
        "symbol": b'"symbols":[{',
        "envelope": b'{"object"',
    }[where]
    at = raw.index(anchor) + len(anchor) - (len(b'"object"') if where == "envelope" else 0)
    spliced = raw[:at] + text + b"," + raw[at:]
    same_as_careful(parse.firehose_event, spliced)


def test_random_byte_mutations_match_the_careful_path() -> None:
    """A differential fuzz: the fast routes never accept what the careful one rejects, nor
    build another record."""
    import random

    rng = random.Random(1)
    alphabet = b'{}[]":,0123456789eE.-+ \\ntrufalsx\x00\x7f\xc3\xa9\xff\xed'
    seeds = [
        orjson.dumps(envelope("Message", SAMPLE_MESSAGE)),
        *itertools.islice(envelopes(iter(Generator(Config(), 0))), 5),
    ]
    for _ in range(3000):
        same_as_careful(parse.firehose_event, mutate_bytes(rng, rng.choice(seeds), alphabet))

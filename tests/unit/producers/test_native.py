"""The native fast path (``native/``, via producers.native) gives exactly the Python path's bytes.

Whenever ``firehose_message`` returns a result, its message id, seq_id and framed value must
equal what the Python path makes of the same bytes — ``parse.firehose_event`` then the
MessageEvent wire encoder the Publisher uses — and it must return ``None`` (defer) whenever the
Python path rejects the input, takes another route (destroy, likes, social) or could not encode
the record. Checked on the real captures, the synthetic stream, hand-picked odd inputs and
thousands of random mutations; and it must not defer on the common inputs, or the speed-up is
not real.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pulse.producers import native, parse
from pulse.producers.firehose import STREAM, FirehoseClient
from pulse.producers.sse import SseEvent
from pulse.producers.synthetic import Config, Generator, envelopes
from pulse.schemas.serde import frame_header, load_schema, wire_encoder
from pulse.schemas.topics import MESSAGES
from pulse.settings import Settings
from tests.unit.producers.mutations import mutate_bytes
from tests.unit.producers.test_parse import REAL_FILES, SAMPLE_MESSAGE, envelope
from tests.unit.producers.test_parse_fast import (
    ENVELOPE_PATHS,
    MESSAGE_PATHS,
    MISSING,
    ODD_VALUES,
    with_value,
)

HEADER = frame_header(4242)
ENCODE = wire_encoder(4242, load_schema(MESSAGES.schema_file))


def firehose_message(raw: bytes) -> tuple[int, str | None, bytes] | None:
    assert native.firehose_message is not None, "pulse_native is not installed (make test does)"
    return native.firehose_message(raw, HEADER)


def python_path(raw: bytes) -> tuple[int, str | None, bytes] | None:
    """What the Python path produces for a Message create; None for anything else."""
    try:
        spec, key, record = parse.firehose_event(raw)
    except parse.ParseError:
        return None
    if spec is not MESSAGES or record["action"] != "create":
        return None
    try:
        value = ENCODE(record)
    except Exception:  # noqa: BLE001 - dead-lettered as serialize_failed by the Publisher
        return None
    assert key == str(record["message_id"])
    return record["message_id"], record["seq_id"], value


def check(raw: bytes) -> bool:
    """Native agrees with the Python path on ``raw``; True if it took it (did not defer)."""
    got = firehose_message(raw)
    if got is None:
        return False
    want = python_path(raw)
    assert want is not None, ("native accepted what Python does not publish", raw[:400])
    assert (got, repr(got)) == (want, repr(want)), raw[:400]
    assert got[1] == parse.seq_id_of(raw)  # the Firehose client uses it for resume
    return True


def real_envelopes() -> list[bytes]:
    out = []
    for path in REAL_FILES:
        doc = json.loads(path.read_text())
        messages = doc.get("messages", []) if isinstance(doc, dict) else doc
        for n, m in enumerate(messages):
            env = envelope("Message", m, seq_id=str(10**55 + n), time=m.get("created_at"))
            out.append(orjson.dumps(env))
    return out


REAL = real_envelopes()
SYNTHETIC = list(itertools.islice(envelopes(iter(Generator(Config(), 1_656_460_800_000))), 3000))


def test_native_module_is_installed() -> None:
    # `make test` installs it (pip install ./native); without it the speed-up is silently gone
    assert native.firehose_message is not None, "pulse_native missing: pip install ./native"
    assert native.module is not None and native.module.MAX_PAYLOAD_BYTES == parse.MAX_PAYLOAD_BYTES


def test_real_captures_take_the_native_path_and_match() -> None:
    assert len(REAL) > 500
    taken = sum(check(raw) for raw in REAL)
    assert taken >= 0.95 * len(REAL), f"native took {taken} of {len(REAL)}"
    # the same messages as Python's json writes them: non-ASCII as \u escapes, emoji as pairs
    escaped = [json.dumps(orjson.loads(raw)).encode() for raw in REAL]
    assert sum(check(raw) for raw in escaped) >= 0.95 * len(escaped)


def test_seed_sample_and_its_odd_envelopes_match() -> None:
    assert check(orjson.dumps(envelope("Message", SAMPLE_MESSAGE)))
    for path in ENVELOPE_PATHS:
        for value in [MISSING, *ODD_VALUES, "destroy", "create", "Message", "LikeMessage"]:
            env = with_value(envelope("Message", SAMPLE_MESSAGE), path, value)
            check(json.dumps(env).encode())


def test_synthetic_stream_takes_the_native_path_and_matches() -> None:
    # what bench/producers_bench.py measures
    assert all(check(raw) for raw in SYNTHETIC)


@pytest.mark.parametrize("path", MESSAGE_PATHS, ids=lambda p: ".".join(map(str, p)))
def test_odd_message_fields_match(path: tuple[Any, ...]) -> None:
    for value in [MISSING, *ODD_VALUES, -(1 << 63), (1 << 63) - 1, 1e300, -0.0, "", "Bearish"]:
        data = with_value(SAMPLE_MESSAGE, path, value)
        env = envelope("Message", data)
        check(json.dumps(env).encode())  # NaN and inf: invalid JSON on both paths
        check(json.dumps(dict(env, time=data.get("created_at"))).encode())  # time reuse
        check(json.dumps({k: v for k, v in env.items() if k != "time"}).encode())


ODD_TEXT = [
    b'"z": 1e400',  # orjson rejects it anywhere, serde's skipping would not look
    b'"z": -1.7976931348623159e308',
    b'"z": 1e-400',
    b'"z": ' + b"9" * 400,
    b'"z": 123456789012345678901234567890',
    b'"z": "\xff"',
    b'"z": "\xc0\xaf"',
    b'"z": "\xed\xa0\x80"',
    b'"z": "\\ud800"',
    b'"z": "\\udc00\\ud800"',
    b'"z": "\\ud83d\\ude00"',
    b'"z": "\x1f"',
    b'"z": "\x7f"',
    b'"z": [[[[[[1]]]]]]',
    b'"z": ' + b"[" * 200 + b"]" * 200,  # deeper than serde_json's limit, not orjson's
    b'"z": {"a": 1, "a": 2}',
    b'"z": [1,]',
    b'"z": 01',
    b'"z": -0',
    b'"z": NaN',
    b'"giphy": null',
    b'"body": "dup body"',  # a duplicate key: the last one wins
    b'"bo\\u0064y": "escaped key"',
    b'"id": 7',
    b'"id": -0',
    b'"id": 7.0',
    b'"id": 9223372036854775807',
    b'"id": 9223372036854775808',
    b'"id": 18446744073709551616',
    b'"id": -9223372036854775808',
    b'"id": -9223372036854775809',
    b'"id": true',
    b'"followers": 18446744073709551615',
    b'"likes": {"total": 18446744073709551617}',
    b'"likes": {"total": 3}',
    b'"likes": {"total": 3, "total": null}',
    b'"likes": {"total": -0}',
    b'"trending_score": -0',
    b'"trending_score": -0.0',
    b'"trending_score": 0',
    b'"trending_score": 1e308',
    b'"trending_score": 12345678901234567890123',
    b'"trending_score": 0.1e1',
    b'"sentiment": {"sentiment_score": -0}',
    b'"sentiment": {"sentiment_score": 0.30000000000000004}',
    b'"created_at": "2017-02-01T19:19:18Z"',
    b'"created_at": "2017-02-01T19:19:18.5Z"',
    b'"user": null',
    b'"user": {"id": 1, "username": "u", "user": 3}',
    b'"symbols": [{"symbol": "A", "symbol": "B"}]',
    b'"object": "Message"',
    b'"object": "LikeMessage"',
    b'"action": "destroy"',
    b'"time": 1485976758000',
    b'"seq_id": 12',
    b'"seq_id": ""',
    b'"seq_id": "\\u0031"',
    b'"time": "2017-02-01T19:19:18+00:00"',
]


@pytest.mark.parametrize("text", ODD_TEXT, ids=lambda t: t.decode("latin-1")[:40])
@pytest.mark.parametrize("where", ["data", "user", "symbol", "envelope", "end"])
def test_raw_json_edge_cases_match(text: bytes, where: str) -> None:
    """Text spliced into the JSON itself: what a dict cannot express."""
    raw = orjson.dumps(envelope("Message", SAMPLE_MESSAGE))
    if where == "end":
        spliced = raw[:-1] + b"," + text + b"}"
    else:
        anchor = {
            "data": b'"data":{',
            "user": b'"user":{',
            "symbol": b'"symbols":[{',
            "envelope": b"{",
        }[where]
        at = raw.index(anchor) + len(anchor)
        spliced = raw[:at] + text + b"," + raw[at:]
    check(spliced)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b'"Message"',
        b"\xef\xbb\xbf" + orjson.dumps(envelope("Message", SAMPLE_MESSAGE)),  # BOM
        orjson.dumps(envelope("Message", SAMPLE_MESSAGE)) + b" \n\t\r",
        b" \n" + orjson.dumps(envelope("Message", SAMPLE_MESSAGE)),
        orjson.dumps(envelope("Message", SAMPLE_MESSAGE)) + b"x",
        orjson.dumps(envelope("Message", SAMPLE_MESSAGE)) + b"\x00",
        orjson.dumps(envelope("Message", SAMPLE_MESSAGE)) + b"{}",
        orjson.dumps(envelope("Message", SAMPLE_MESSAGE))[:-1],
    ],
)
def test_whole_input_edge_cases_match(raw: bytes) -> None:
    check(raw)


def test_oversized_payload_defers() -> None:
    data = dict(SAMPLE_MESSAGE, body="x" * parse.MAX_PAYLOAD_BYTES)
    raw = orjson.dumps(envelope("Message", data))
    assert firehose_message(raw) is None
    with pytest.raises(parse.ParseError):
        parse.firehose_event(raw)
    small = dict(SAMPLE_MESSAGE, body="x" * (parse.MAX_PAYLOAD_BYTES - 2000))
    assert check(orjson.dumps(envelope("Message", small)))


LABELS: list[Any] = [None, "Bullish", "Bearish", "bullish", "", 1, True, [], {}]
URLS: list[Any] = [MISSING, None, "", "u", 5, 1.5, True, [], {}]


@pytest.mark.parametrize("basic", LABELS)
def test_sentiment_label_and_chart_url_rules_match(basic: Any) -> None:
    """``basic in ("Bullish", "Bearish")``; ``_opt_str(url) or _opt_str(original)``."""
    for url, original in itertools.product(URLS, URLS):
        chart = {k: v for k, v in (("url", url), ("original", original)) if v is not MISSING}
        for entities in (
            {"sentiment": {"basic": basic}, "chart": chart},
            {"sentiment": basic, "chart": None if url is MISSING else url},
            {"chart": None},
            None,
            [],
        ):
            data = dict(SAMPLE_MESSAGE, entities=entities)
            check(json.dumps(envelope("Message", data)).encode())
    assert check(orjson.dumps(envelope("Message", dict(SAMPLE_MESSAGE, entities=None))))


def _timestamps(rng: random.Random) -> list[str]:
    """Random text near the accepted form: digits, separators, fractions, zones."""
    out = []
    for _ in range(4000):
        dt = datetime(1, 1, 1, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(0, 9998 * 365 * 86400), microseconds=rng.randrange(10**6)
        )
        text = dt.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
        frac = rng.choice(["", "", ".", *(f".{rng.randrange(10**k):0{k}d}" for k in range(1, 9))])
        zone = rng.choice(["Z", "Z", "", "+00:00", "-05:30", "z", " Z", "Z "])
        text = text + frac + zone
        if rng.random() < 0.3:  # break a character
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice("0123456789:-T. Z9") + text[at + 1 :]
        out.append(text)
    return out


def test_timestamps_match_fromisoformat() -> None:
    rng = random.Random(7)
    texts = [
        "2017-02-01T19:16:54Z",
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59.9995Z",  # before the epoch: floor to the ms below
        "1969-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "0000-01-01T00:00:00Z",
        "2024-02-29T12:00:00Z",
        "2023-02-29T12:00:00Z",
        "1900-02-29T12:00:00Z",
        "2000-02-29T12:00:00Z",
        "2017-02-01T24:00:00Z",
        "2017-02-01T23:60:00Z",
        "2017-02-01T23:59:60Z",
        "2017-13-01T00:00:00Z",
        "2017-00-01T00:00:00Z",
        "2017-04-31T00:00:00Z",
        "2017-02-01T19:16:54.Z",
        "2017-02-01T19:16:54.1234567Z",
        "2017-02-01 19:16:54Z",
        "2017-02-01T19:16:54ZZ",
        "20170201T191654Z",
        "2017-02-01T19:16Z",
        "２017-02-01T19:16:54Z",
        *_timestamps(rng),
    ]
    taken = 0
    for text in texts:
        for data in (dict(SAMPLE_MESSAGE, created_at=text), SAMPLE_MESSAGE):
            raw = orjson.dumps(envelope("Message", data, time=text))
            taken += check(raw)
    assert taken > 1000  # the valid ones of the accepted form


def _random_number(rng: random.Random) -> bytes:
    sign = rng.choice(["", "", "-"])
    digits = str(rng.randrange(10 ** rng.randint(1, 25)))
    frac = rng.choice(["", f".{rng.randrange(10 ** rng.randint(1, 20))}"])
    exp = rng.choice(["", "", f"e{rng.randint(-330, 330)}", f"E+{rng.randint(0, 30)}"])
    return f"{sign}{digits}{frac}{exp}".encode()


def test_random_numbers_match() -> None:
    """Floats parse correctly rounded on both sides; ints in and out of the long range."""
    rng = random.Random(3)
    raw = orjson.dumps(envelope("Message", SAMPLE_MESSAGE))
    anchors = [b'"sentiment_score":', b'"trending_score":', b'"followers":', b'"total":']
    base = json.loads(raw)
    base["data"]["sentiment"] = {"sentiment_score": 0.5}
    base["data"]["symbols"][0]["trending_score"] = 1.5
    base["data"]["likes"] = {"total": 1}
    raw = json.dumps(base, separators=(",", ":")).encode()
    taken = 0
    for _ in range(4000):
        anchor = rng.choice(anchors)
        at = raw.index(anchor) + len(anchor)
        end = min(raw.index(c, at) for c in (b",", b"}") if c in raw[at:])
        taken += check(raw[:at] + _random_number(rng) + raw[end:])
    assert taken > 1000


def test_random_byte_mutations_match() -> None:
    rng = random.Random(11)
    seeds = [*rng.sample(REAL, 40), *SYNTHETIC[:20], orjson.dumps(envelope("Message", SAMPLE))]
    for _ in range(6000):
        check(mutate_bytes(rng, rng.choice(seeds)))


SAMPLE = SAMPLE_MESSAGE
SWAPS: list[Any] = [
    *ODD_VALUES[:20],  # json-encodable ones; inf and nan become invalid JSON
    -(1 << 63),
    1 << 63,
    -0.0,
    0.1,
    "Bullish",
    "1,5",
    [],
    ["a", 2, None, True],
    {},
    {"url": "u", "symbol": "S", "total": 2, "id": 3, "name": "n", "basic": "Bullish"},
    [{"url": "u", "title": 5}],
    [{"symbol": "S", "price": "1.5"}, {"symbol": 3}, "x"],
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def test_random_field_type_swaps_match() -> None:
    """A random node of a real envelope replaced by a value of another type, or removed."""
    rng = random.Random(5)
    seeds = [orjson.loads(raw) for raw in rng.sample(REAL, 60)]
    seeds += [orjson.loads(raw) for raw in SYNTHETIC[:10]]
    for _ in range(4000):
        env = copy.deepcopy(rng.choice(seeds))
        for _ in range(rng.randint(1, 2)):
            paths = _paths(env)
            env = with_value(env, rng.choice(paths), rng.choice([MISSING, *SWAPS]))
        check(json.dumps(env).encode())


# --- the Firehose client takes the native path and publishes the same records --------------


class RecordingPublisher:
    """What the client hands to the Publisher, as (topic, key, value, headers)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, Any]] = []
        self.native = 0

    def header(self, spec: Any) -> bytes:
        assert spec is MESSAGES
        return HEADER

    def publish_value(self, spec: Any, key: bytes, value: bytes, **kw: Any) -> None:
        self.native += 1
        self.sent.append((spec.name, key, value, kw["headers"]))

    def publish(self, item: parse.Parsed, **kw: Any) -> bool:
        value = ENCODE(item.record) if item.spec is MESSAGES else repr(item.record).encode()
        self.sent.append((item.spec.name, item.key.encode(), value, kw["headers"]))
        return True

    def reject(self, raw: bytes, error: parse.ParseError, **kw: Any) -> None:
        self.sent.append(("rejected", b"", raw, kw["headers"]))


def test_firehose_client_publishes_the_same_records_either_way() -> None:
    events = [*SYNTHETIC[:200], *REAL[:200]]
    events += [mutate_bytes(random.Random(n), events[n]) for n in range(100)]
    events.append(orjson.dumps(envelope("LikeMessage", {"id": 1, "message_id": 2, "user_id": 3})))
    runs = []
    for use_native in (True, False):
        publisher = RecordingPublisher()
        client = FirehoseClient(Settings.from_env({}), STREAM, publisher)  # type: ignore[arg-type]
        if not use_native:
            client._native = None
        for raw in events:
            client._handle(SseEvent(raw))
        runs.append((publisher, client.position, client.events, client.tracker.pending))
    (fast, *state_fast), (slow, *state_slow) = runs
    assert fast.sent == slow.sent and state_fast == state_slow
    assert fast.native >= 390 and slow.native == 0


HOSTILE_SYMBOLS = [
    "[/]", "[link=https://x]AAPL[/link]", "\x1b[2J", "AAPL\x1b", "<!channel>", "<https://x|AAPL>",
    "A" * 5000, "A" * 25, "", " AAPL", "AAPL ", "ÄPL", "AA\u200bPL", "AAPL\n", ".X", "-A", "a|b",
]  # fmt: skip
PLAIN_SYMBOLS = ["AAPL", "BRK.B", "BTC.X", "ES_F", "NIFTY50.NSE", "^GSPC", "EURUSD=X", "A" * 24]


@pytest.mark.parametrize("symbol", HOSTILE_SYMBOLS + PLAIN_SYMBOLS)
def test_symbols_native_defers_on_what_python_dead_letters(symbol: str) -> None:
    for where in ("symbols", "prices"):
        data = copy.deepcopy(SAMPLE_MESSAGE)
        if where == "symbols":
            data["symbols"] = [{"id": 1, "symbol": "AAPL"}, {"id": 2, "symbol": symbol}]
        else:
            data["prices"] = [{"symbol": symbol, "price": "1.5"}, {"symbol": "AAPL", "price": "2"}]
        for raw in (orjson.dumps(envelope("Message", data)),
                    json.dumps(envelope("Message", data)).encode()):  # fmt: skip
            taken = check(raw)
            plain = parse.valid_symbol(symbol)
            assert taken == plain, (where, symbol[:30])
            if not plain and where == "symbols":
                with pytest.raises(parse.ParseError, match="not a valid symbol") as err:
                    parse.firehose_event(raw)
                assert err.value.reason.value == "invalid_record"
                assert "\x1b" not in str(err.value) and len(str(err.value)) < 200
            if not plain and where == "prices":
                prices = parse.firehose_event(raw).record["message"]["prices"]
                assert prices == [{"symbol": "AAPL", "price": "2"}]

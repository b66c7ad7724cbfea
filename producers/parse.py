"""Pure, tolerant parsing of upstream Stocktwits JSON into the Avro records of ``schemas/*.avsc``.

Rules, the same for every source:

- unknown fields are ignored (real messages carry ``giphy``, ``home_country``, ``plus_tier`` …);
- a missing or null *optional* field becomes its Avro default; an optional field of an unusable
  type (e.g. ``"followers": "many"``) also becomes its default, because it is decoration, not
  identity;
- a missing or mistyped *required* field (ids, ``created_at``, ``body``, ``user``, a symbol's
  ticker, a score), non-JSON, or an unknown Firehose object raises :class:`ParseError` with a
  :class:`~schemas.deadletter.Reason`; a half-built record is never returned;
- every timestamp becomes an ``int`` of UTC epoch milliseconds.

No I/O here: callers hand in bytes or already-decoded JSON and get ``Parsed`` tuples back.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from pulse.schemas.deadletter import Reason
from pulse.schemas.topics import (
    LIKES,
    MESSAGES,
    RAW_SENTIMENT,
    SENTIMENT_CHART,
    SOCIAL,
    TRENDING,
    TopicSpec,
)

MAX_PAYLOAD_BYTES = 1 << 20  # one SSE event or one HTTP body; a bigger one is hostile or broken
# What a symbol may be. Stocktwits tickers are short ASCII: AAPL, BRK.B, BTC.X, ES_F, NIFTY50.NSE,
# and index/forex/futures forms with "^", "-", "=". Symbols become Kafka keys, topic-key parts
# (`symbol|zoom|time`), URL path segments, board rows and webhook text: anything else (markup
# such as `[/]` or `<!channel>`, ESC bytes, spaces, 5 KB strings) is not a symbol. A message
# naming one is dead-lettered whole, like one with a missing ticker (a required field). The
# native fast path (native/src/lib.rs, `plain_symbol`) defers on anything else, so this stays
# the one definition.
SYMBOL_MAX_CHARS = 24
SYMBOL = re.compile(rf"[A-Za-z0-9^][A-Za-z0-9._^=-]{{0,{SYMBOL_MAX_CHARS - 1}}}")
ACTIONS = ("create", "destroy")
SENTIMENTS = ("Bullish", "Bearish")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class ParseError(ValueError):
    """Upstream input that cannot become a record; ``reason`` is the dead-letter code."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Parsed(NamedTuple):
    """One record ready to publish: its topic, Kafka key and Avro value dict."""

    spec: TopicSpec
    key: str
    record: dict[str, Any]


class Cursor(NamedTuple):
    """REST API v2 pagination cursor (``since`` = newest id on the page, ``max`` = oldest)."""

    since: int | None
    max: int | None
    more: bool


class Rejected(NamedTuple):
    """One element of a multi-item response that failed; the rest of the response stands."""

    raw: bytes
    error: ParseError


class RestPage(NamedTuple):
    items: list[Parsed]
    rejected: list[Rejected]
    cursor: Cursor


class TrendingPage(NamedTuple):
    items: list[Parsed]
    rejected: list[Rejected]
    page: int | None
    has_more: bool


class ChartPage(NamedTuple):
    items: list[Parsed]
    rejected: list[Rejected]


# --- primitives -----------------------------------------------------------------------------


def loads(raw: bytes | bytearray | str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Any:
    """Decode JSON text; too large, invalid UTF-8 or invalid JSON raise :class:`ParseError`."""
    if len(raw) > max_bytes:
        raise ParseError(Reason.TOO_LARGE, f"payload of {len(raw)} bytes exceeds {max_bytes}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(Reason.INVALID_JSON, f"not JSON: {exc}") from None


def _decoded(raw: bytes | str | Any) -> Any:
    return loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw


def _each(values: list[Any], parse: Callable[[Any], Parsed]) -> tuple[list[Parsed], list[Rejected]]:
    """Parse the elements of a response one by one, so one bad element rejects only itself."""
    items, rejected = [], []
    for value in values:
        try:
            items.append(parse(value))
        except ParseError as exc:
            rejected.append(Rejected(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS), exc))
    return items, rejected


def _invalid(message: str) -> ParseError:
    return ParseError(Reason.INVALID_RECORD, message)


def timestamp_ms(value: Any, field: str = "time") -> int:
    """ISO-8601 text (``2017-02-01T19:16:54Z``, offsets, fractions) or epoch number → UTC ms.

    Naive timestamps are taken as UTC, which is what Stocktwits sends. Numbers above 1e11 are
    read as milliseconds, smaller ones as seconds.
    """
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _invalid(f"{field}: not an ISO-8601 timestamp: {value[:64]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - _EPOCH) // _MS
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return int(value) if abs(value) >= 1e11 else int(value * 1000)
    raise _invalid(f"{field}: expected a timestamp, got {type(value).__name__}")


def _req_int(obj: Mapping[str, Any], field: str) -> int:
    value = obj.get(field)
    if type(value) is int:  # the common case first; the checks below give the same answer
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)  # ids sometimes travel as strings
    if value is None:
        raise _invalid(f"missing required field {field!r}")
    raise _invalid(f"{field}: expected an integer, got {type(value).__name__}")


def valid_symbol(value: str) -> bool:
    """Whether ``value`` is a symbol as defined by :data:`SYMBOL`."""
    return SYMBOL.fullmatch(value) is not None


def _req_symbol(obj: Mapping[str, Any], field: str = "symbol") -> str:
    value = _req_str(obj, field)
    if SYMBOL.fullmatch(value) is None:
        # repr and a prefix: the text reaches logs and dead-letter records, never raw
        shown = repr(value[:40]) + ("…" if len(value) > 40 else "")
        raise _invalid(f"{field}: not a valid symbol ({len(value)} chars): {shown}")
    return value


def _req_str(obj: Mapping[str, Any], field: str) -> str:
    value = obj.get(field)
    if isinstance(value, str):
        return value
    if value is None:
        raise _invalid(f"missing required field {field!r}")
    raise _invalid(f"{field}: expected a string, got {type(value).__name__}")


def _req_dict(obj: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = obj.get(field)
    if isinstance(value, dict):
        return value
    if value is None:
        raise _invalid(f"missing required field {field!r}")
    raise _invalid(f"{field}: expected an object, got {type(value).__name__}")


def _opt_int(value: Any) -> int | None:
    # absent and well-typed values first: ~20 optional fields per message, parse's hot path
    if value is None or type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = float(value.replace(",", ""))
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def _opt_str(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _opt_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _opt_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _opt_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _seq_id(value: Any) -> str | None:
    # seq_ids are 56-digit numbers: only a string keeps them exact
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# --- Message --------------------------------------------------------------------------------


def symbol_ref(obj: Any) -> dict[str, Any]:
    """A ``SymbolRef`` from a message's or sentiment event's symbol entry."""
    if not isinstance(obj, dict):
        raise _invalid(f"symbol entry: expected an object, got {type(obj).__name__}")
    return {
        "symbol": _req_symbol(obj),
        "id": _opt_int(obj.get("id")),
        "title": _opt_str(obj.get("title")),
        "exchange": _opt_str(obj.get("exchange")),
        "sector": _opt_str(obj.get("sector")),
        "industry": _opt_str(obj.get("industry")),
        "watchlist_count": _opt_int(obj.get("watchlist_count")),
        "trending": _opt_bool(obj.get("trending")),
        "trending_score": _opt_float(obj.get("trending_score")),
    }


def _user(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": _req_int(obj, "id"),
        "username": _req_str(obj, "username"),
        "name": _opt_str(obj.get("name")),
        "official": obj.get("official") is True,
        "identity": _opt_str(obj.get("identity")),
        "classification": [c for c in _opt_list(obj.get("classification")) if isinstance(c, str)],
        "join_date": _opt_str(obj.get("join_date")),
        "followers": _opt_int(obj.get("followers")),
        "following": _opt_int(obj.get("following")),
        "ideas": _opt_int(obj.get("ideas")),
        "watchlist_stocks_count": _opt_int(obj.get("watchlist_stocks_count")),
    }


def _conversation(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {
        "parent_message_id": _opt_int(value.get("parent_message_id")),
        "in_reply_to_message_id": _opt_int(value.get("in_reply_to_message_id")),
        "parent": value.get("parent") is True,
        "replies": _opt_int(value.get("replies")) or 0,
    }


def _links(value: Any) -> list[dict[str, Any]]:
    out = []
    for link in _opt_list(value):
        # a link without a url carries nothing worth keeping; it is decoration, not identity
        if isinstance(link, dict) and isinstance(link.get("url"), str):
            out.append(
                {
                    "url": link["url"],
                    "title": _opt_str(link.get("title")),
                    "shortened_url": _opt_str(link.get("shortened_url")),
                    "source_name": _opt_str(_opt_dict(link.get("source")).get("name")),
                }
            )
    return out


def _source(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {
        "id": _opt_int(value.get("id")),
        "title": _opt_str(value.get("title")),
        "url": _opt_str(value.get("url")),
    }


def _prices(value: Any) -> list[dict[str, Any]]:
    return [
        {"symbol": p["symbol"], "price": _opt_str(p.get("price"))}
        for p in _opt_list(value)
        # prices are decoration: an entry without a usable symbol is left out
        if isinstance(p, dict) and isinstance(p.get("symbol"), str) and valid_symbol(p["symbol"])
    ]


# --- the common case, fast --------------------------------------------------------------------
#
# Parsing is most of a producer's CPU time, and almost every upstream message is well-formed:
# every field absent, null or of exactly the type its record field wants. For those, the
# careful helpers above are identities, so the fast path below reads the fields, checks their
# types in bulk and builds the record directly, without a helper call per field. Anything else
# (a string id, a float count, a dict subclass, a bad timestamp …) raises _Unusual and the
# careful path parses the input from scratch: it returns the same record or raises the
# ParseError it always did. Equality with the careful path is pinned by tests.

_NoneType = type(None)
_STR_OR_NONE = frozenset((str, _NoneType))
_INT_OR_NONE = frozenset((int, _NoneType))
_BOOL_OR_NONE = frozenset((bool, _NoneType))


class _Unusual(Exception):
    """The input is not of the common shape: hand it to the careful path."""


def _symbol_ref_fast(obj: Any) -> dict[str, Any]:
    if type(obj) is not dict:
        raise _Unusual
    get = obj.get
    symbol, title, exchange = get("symbol"), get("title"), get("exchange")
    sector, industry, trending = get("sector"), get("industry"), get("trending")
    stock_id, watchlist_count, score = get("id"), get("watchlist_count"), get("trending_score")
    if (
        type(symbol) is not str
        or SYMBOL.fullmatch(symbol) is None
        or type(title) not in _STR_OR_NONE
        or type(exchange) not in _STR_OR_NONE
        or type(sector) not in _STR_OR_NONE
        or type(industry) not in _STR_OR_NONE
        or type(stock_id) not in _INT_OR_NONE
        or type(watchlist_count) not in _INT_OR_NONE
        or type(trending) not in _BOOL_OR_NONE
    ):
        raise _Unusual
    return {
        "symbol": symbol,
        "id": stock_id,
        "title": title,
        "exchange": exchange,
        "sector": sector,
        "industry": industry,
        "watchlist_count": watchlist_count,
        "trending": trending,
        "trending_score": None if score is None else _opt_float(score),
    }


def _message_fast(
    data: dict[str, Any], when: Any = None, when_ms: int | None = None
) -> dict[str, Any]:
    """``message(data)`` for a message of the common shape; raises _Unusual otherwise.

    :param when, when_ms: a timestamp already converted (the envelope's ``time``), reused
        when ``created_at`` is the same text, as it is for every Firehose create.
    """
    get = data.get
    message_id, body, user, created = get("id"), get("body"), get("user"), get("created_at")
    if type(message_id) is not int or type(body) is not str or type(user) is not dict:
        raise _Unusual
    if type(created) is str and created == when and when_ms is not None:
        created_ms = when_ms
    else:
        created_ms = timestamp_ms(created, "created_at")  # a ParseError: careful path too
    symbols = get("symbols")
    if symbols is None:
        symbol_refs = []
    elif type(symbols) is list:
        symbol_refs = [_symbol_ref_fast(s) for s in symbols]
    else:
        raise _Unusual
    sentiment, chart_url = _entities_fast(get("entities"))
    # rarer parts: the careful helpers (they never raise), called only when the field is there
    score, conversation = get("sentiment"), get("conversation")
    likes, reshares, reshared = get("likes"), get("reshares"), get("reshare_message")
    links, prices = get("links"), get("prices")
    return {
        "id": message_id,
        "body": body,
        "created_at_ms": created_ms,
        "user": _user_fast(user),
        "symbols": symbol_refs,
        "sentiment": sentiment,
        "sentiment_score": (
            None if score is None else _opt_float(_opt_dict(score).get("sentiment_score"))
        ),
        "conversation": None if conversation is None else _conversation(conversation),
        "likes_count": 0 if likes is None else _opt_int(_opt_dict(likes).get("total")) or 0,
        "reshares_count": (
            0 if reshares is None else _opt_int(_opt_dict(reshares).get("reshared_count")) or 0
        ),
        "reshared_message_id": (
            None
            if reshared is None
            else _opt_int(_opt_dict(_opt_dict(reshared).get("message")).get("id"))
        ),
        "links": [] if links is None else _links(links),
        "source": _source_fast(get("source")),
        "mentioned_users": _strings_fast(get("mentioned_users")),
        "prices": [] if prices is None else _prices(prices),
        "chart_url": chart_url,
    }


def _user_fast(user: dict[str, Any]) -> dict[str, Any]:
    """The User record of :func:`_message_fast`; raises _Unusual for an odd field."""
    uget = user.get
    user_id, username, name = uget("id"), uget("username"), uget("name")
    identity, join_date = uget("identity"), uget("join_date")
    followers, following, ideas = uget("followers"), uget("following"), uget("ideas")
    watchlist_stocks = uget("watchlist_stocks_count")
    if (
        type(user_id) is not int
        or type(username) is not str
        or type(name) not in _STR_OR_NONE
        or type(identity) not in _STR_OR_NONE
        or type(join_date) not in _STR_OR_NONE
        or type(followers) not in _INT_OR_NONE
        or type(following) not in _INT_OR_NONE
        or type(ideas) not in _INT_OR_NONE
        or type(watchlist_stocks) not in _INT_OR_NONE
    ):
        raise _Unusual
    return {
        "id": user_id,
        "username": username,
        "name": name,
        "official": uget("official") is True,
        "identity": identity,
        "classification": _strings_fast(uget("classification")),
        "join_date": join_date,
        "followers": followers,
        "following": following,
        "ideas": ideas,
        "watchlist_stocks_count": watchlist_stocks,
    }


def _strings_fast(values: Any) -> list[str]:
    """A list's strings (None: none); raises _Unusual for anything but a list or None."""
    if values is None:
        return []
    if type(values) is list:
        return [v for v in values if isinstance(v, str)]
    raise _Unusual


def _entities_fast(entities: Any) -> tuple[str | None, str | None]:
    """(sentiment label, chart url) of a message's ``entities``."""
    if entities is None:
        return None, None
    if type(entities) is not dict:
        raise _Unusual
    labelled = entities.get("sentiment")
    basic = None if labelled is None else _opt_dict(labelled).get("basic")
    chart = entities.get("chart")
    chart = _NO_CHART if chart is None else _opt_dict(chart)
    chart_url = _opt_str(chart.get("url")) or _opt_str(chart.get("original"))
    return (basic if basic in SENTIMENTS else None), chart_url


def _source_fast(source: Any) -> dict[str, Any] | None:
    """The Source record of a message's ``source``."""
    if source is None:
        return None
    if type(source) is not dict:
        raise _Unusual
    source_id, title, url = source.get("id"), source.get("title"), source.get("url")
    if (
        type(source_id) not in _INT_OR_NONE
        or type(title) not in _STR_OR_NONE
        or type(url) not in _STR_OR_NONE
    ):
        raise _Unusual
    return {"id": source_id, "title": title, "url": url}


_NO_CHART: Mapping[str, Any] = {}


def message(data: Any) -> dict[str, Any]:
    """A ``Message`` record from a Stocktwits message object (Firehose ``data`` or REST item)."""
    if type(data) is dict:
        try:
            return _message_fast(data)
        except (_Unusual, ParseError):
            pass  # the careful path decides: the same record, or the error it reports
    return _message_careful(data)


def _message_careful(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _invalid(f"message: expected an object, got {type(data).__name__}")
    entities = _opt_dict(data.get("entities"))
    basic = _opt_dict(entities.get("sentiment")).get("basic")  # entities.sentiment may be null
    score = _opt_float(_opt_dict(data.get("sentiment")).get("sentiment_score"))
    chart = _opt_dict(entities.get("chart"))
    reshared = _opt_dict(_opt_dict(data.get("reshare_message")).get("message"))
    symbols = data.get("symbols")
    if symbols is not None and not isinstance(symbols, list):
        raise _invalid(f"symbols: expected a list, got {type(symbols).__name__}")
    return {
        "id": _req_int(data, "id"),
        "body": _req_str(data, "body"),
        "created_at_ms": timestamp_ms(data.get("created_at"), "created_at"),
        "user": _user(_req_dict(data, "user")),
        "symbols": [symbol_ref(s) for s in symbols or ()],
        "sentiment": basic if basic in SENTIMENTS else None,
        "sentiment_score": score,
        "conversation": _conversation(data.get("conversation")),
        "likes_count": _opt_int(_opt_dict(data.get("likes")).get("total")) or 0,
        "reshares_count": _opt_int(_opt_dict(data.get("reshares")).get("reshared_count")) or 0,
        "reshared_message_id": _opt_int(reshared.get("id")),
        "links": _links(data.get("links")),
        "source": _source(data.get("source")),
        "mentioned_users": [
            u for u in _opt_list(data.get("mentioned_users")) if isinstance(u, str)
        ],
        "prices": _prices(data.get("prices")),
        "chart_url": _opt_str(chart.get("url")) or _opt_str(chart.get("original")),
    }


def message_event(
    data: Any,
    *,
    action: str = "create",
    event_time_ms: int | None = None,
    seq_id: str | None = None,
    origin: str = "firehose",
) -> Parsed:
    """A ``MessageEvent`` on stocktwits.messages, keyed by message id.

    A destroy needs only ``data.id``; its body is kept when upstream sent a complete message.
    """
    if action not in ACTIONS:
        raise _invalid(f"action: expected create or destroy, got {action!r}")
    if action == "destroy":
        if not isinstance(data, dict):
            raise _invalid(f"message: expected an object, got {type(data).__name__}")
        message_id = _req_int(data, "id")
        try:
            body: dict[str, Any] | None = message(data)
        except ParseError:
            body = None  # destroys often carry just the id
        if event_time_ms is None:
            if body is None:
                raise _invalid("destroy without envelope time or created_at")
            event_time_ms = body["created_at_ms"]
    else:
        body = message(data)
        message_id = body["id"]
        if event_time_ms is None:
            event_time_ms = body["created_at_ms"]
    record = {
        "action": action,
        "message_id": message_id,
        "event_time_ms": event_time_ms,
        "seq_id": seq_id,
        "origin": origin,
        "message": body,
    }
    return Parsed(MESSAGES, str(message_id), record)


# --- Firehose /stream -----------------------------------------------------------------------


def _like(data: Mapping[str, Any], action: str, time_ms: int, seq: str | None) -> Parsed:
    like_id = _req_int(data, "id")
    created = data.get("created_at")
    record = {
        "action": action,
        "id": like_id,
        "message_id": _req_int(data, "message_id"),
        "user_id": _req_int(data, "user_id"),
        "liked_user_id": _opt_int(data.get("liked_user_id")),
        "created_at_ms": time_ms if created is None else timestamp_ms(created, "created_at"),
        "event_time_ms": time_ms,
        "seq_id": seq,
    }
    return Parsed(LIKES, str(like_id), record)


def _social(
    kind: str, target: str, data: Mapping[str, Any], action: str, time_ms: int, seq: str | None
) -> Parsed:
    social_id = _req_int(data, "id")
    created = data.get("created_at")
    record = {
        "kind": kind,
        "action": action,
        "id": social_id,
        "user_id": _req_int(data, "user_id"),
        "target_user_id": _req_int(data, target),
        "muted": _opt_bool(data.get("muted")) if kind == "BLOCK" else None,
        "created_at_ms": time_ms if created is None else timestamp_ms(created, "created_at"),
        "event_time_ms": time_ms,
        "seq_id": seq,
    }
    return Parsed(SOCIAL, f"{kind}:{social_id}", record)


FIREHOSE_OBJECTS = ("Message", "LikeMessage", "Friendship", "Block")


def _message_create_fast(env: dict[str, Any]) -> Parsed:
    """``firehose_event`` of a well-formed Message create; raises _Unusual for anything else
    (destroys included: rare, and their rules are the careful path's)."""
    action, data = env.get("action"), env.get("data")
    if type(action) is not str or action != "create" or type(data) is not dict:
        raise _Unusual
    seq, when = env.get("seq_id"), env.get("time")
    if type(seq) is not str or not seq:
        seq = _seq_id(seq)
    if when is None:
        when = data.get("created_at")
    time_ms = timestamp_ms(when, "time")
    body = _message_fast(data, when, time_ms)
    message_id = body["id"]
    record = {
        "action": "create",
        "message_id": message_id,
        "event_time_ms": time_ms,
        "seq_id": seq,
        "origin": "firehose",
        "message": body,
    }
    return Parsed(MESSAGES, str(message_id), record)


def firehose_event(raw: bytes | str | Mapping[str, Any]) -> Parsed:
    """One Firehose ``/stream`` envelope ``{object, action, data, time, seq_id}`` → record.

    Message → stocktwits.messages (create and destroy alike), LikeMessage → stocktwits.likes,
    Friendship / Block → stocktwits.social.
    """
    env = _decoded(raw)
    if type(env) is dict and env.get("object") == "Message":
        try:
            return _message_create_fast(env)
        except (_Unusual, ParseError):
            pass  # the careful path below decides: the same record, or its error
    if not isinstance(env, dict):
        raise _invalid(f"envelope: expected an object, got {type(env).__name__}")
    kind = env.get("object")
    if kind not in FIREHOSE_OBJECTS:
        raise ParseError(Reason.UNKNOWN_OBJECT, f"unknown Firehose object {kind!r}")
    action = env.get("action")
    if action not in ACTIONS:
        raise _invalid(f"action: expected create or destroy, got {action!r}")
    data = _req_dict(env, "data")
    seq = _seq_id(env.get("seq_id"))
    when = env.get("time")
    if when is None:  # `time` is documented, but tolerate its absence for creates
        when = data.get("created_at")
    time_ms = timestamp_ms(when, "time")
    if kind == "Message":
        return message_event(data, action=action, event_time_ms=time_ms, seq_id=seq)
    if kind == "LikeMessage":
        return _like(data, action, time_ms, seq)
    if kind == "Friendship":
        return _social("FRIENDSHIP", "following_user_id", data, action, time_ms, seq)
    return _social("BLOCK", "blocked_user_id", data, action, time_ms, seq)


def seq_id_of(raw: bytes | str | Mapping[str, Any]) -> str | None:
    """Best-effort ``seq_id`` of an event, also for ones that fail to parse (resume point)."""
    try:
        obj = _decoded(raw)
    except ParseError:
        return None
    return _seq_id(obj.get("seq_id")) if isinstance(obj, dict) else None


# --- Firehose /sentiment --------------------------------------------------------------------


def sentiment_event(raw: bytes | str | Mapping[str, Any]) -> Parsed:
    """One ``/sentiment`` item → ``SentimentEvent`` on stocktwits.sentiment, keyed by message id."""
    obj = _decoded(raw)
    if isinstance(obj, dict) and "message_id" not in obj and isinstance(obj.get("data"), dict):
        obj = {"seq_id": obj.get("seq_id"), **obj["data"]}  # tolerate an enveloped variant
    if not isinstance(obj, dict):
        raise _invalid(f"sentiment event: expected an object, got {type(obj).__name__}")
    score = obj.get("sentiment_score")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise _invalid(f"sentiment_score: expected a number, got {type(score).__name__}")
    if not -1.0 <= score <= 1.0:  # also rejects NaN
        raise _invalid(f"sentiment_score {score!r} outside [-1, 1]")
    symbols = obj.get("symbols")
    if symbols is not None and not isinstance(symbols, list):
        raise _invalid(f"symbols: expected a list, got {type(symbols).__name__}")
    message_id = _req_int(obj, "message_id")
    record = {
        "message_id": message_id,
        "user_id": _opt_int(obj.get("user_id")),
        "created_at_ms": timestamp_ms(obj.get("created_at"), "created_at"),
        "sentiment_score": float(score),
        "symbols": [symbol_ref(s) for s in symbols or ()],
        "seq_id": _seq_id(obj.get("seq_id")),
    }
    return Parsed(RAW_SENTIMENT, str(message_id), record)


# --- trending symbols -----------------------------------------------------------------------


def _market_index(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _invalid(f"market index: expected an object, got {type(obj).__name__}")
    return {
        "symbol": _req_symbol(obj),
        "title": _opt_str(obj.get("title")),
        "exchange": _opt_str(obj.get("exchange")),
        "price": _opt_float(obj.get("price")),
        "change": _opt_float(obj.get("change")),
        "percent_change": _opt_float(obj.get("percent_change")),
        "volume": _opt_int(obj.get("volume")),
    }


def trending_page(
    raw: bytes | str | Mapping[str, Any],
    *,
    snapshot_ms: int,
    asset_class: str | None = None,
    region: str | None = None,
) -> TrendingPage:
    """A trending-symbols response (``{"data": {...}, "status": ...}`` or the bare ``data``)
    → one ``TrendingSymbol`` per row, keyed by symbol, each carrying the page's market indexes.
    """
    obj = _decoded(raw)
    if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
        obj = obj["data"]
    if not isinstance(obj, dict):
        raise _invalid(f"trending page: expected an object, got {type(obj).__name__}")
    rows = obj.get("trending_symbols")
    if not isinstance(rows, list):
        raise _invalid("trending page: missing trending_symbols list")
    indexes = [_market_index(m) for m in _opt_list(obj.get("market_indexes"))]

    def parse_row(row: Any) -> Parsed:
        if not isinstance(row, dict):
            raise _invalid(f"trending row: expected an object, got {type(row).__name__}")
        symbol = _req_symbol(row)
        record = {
            "symbol": symbol,
            "snapshot_ms": snapshot_ms,
            "rank": _opt_int(row.get("rank")),
            "title": _opt_str(row.get("title")),
            "exchange": _opt_str(row.get("exchange")),
            "sector": _opt_str(row.get("sector")),
            "industry": _opt_str(row.get("industry")),
            "instrument_class": _opt_str(row.get("instrument_class")),
            "trending_score": _opt_float(row.get("trending_score")),
            "watchlist_count": _opt_int(row.get("watchlist_count")),
            "price": _opt_float(row.get("price")),
            "change": _opt_float(row.get("change")),
            "percent_change": _opt_float(row.get("percent_change")),
            "volume": _opt_int(row.get("volume")),
            "trend_summary": _opt_str(row.get("trend_summary")),
            "trend_rank_all": _opt_int(row.get("trend_rank_all")),
            "trend_rank_region": _opt_int(row.get("trend_rank_region")),
            "asset_class": asset_class,
            "region": region,
            "market_indexes": indexes,
        }
        return Parsed(TRENDING, symbol, record)

    items, rejected = _each(rows, parse_row)
    return TrendingPage(items, rejected, _opt_int(obj.get("page")), obj.get("has_more") is True)


# --- sentiment chart v2 ---------------------------------------------------------------------


def chart_key(symbol: str, zoom: str, time_ms: int) -> str:
    return f"{symbol}|{zoom}|{time_ms}"


def chart_points(
    raw: bytes | str | Mapping[str, Any], *, symbol: str, zoom: str, fetched_at_ms: int
) -> ChartPage:
    """A sentiment-chart response ``{"data": {dateTime: point}}`` → ``SentimentChartPoint``s,
    oldest first, keyed ``symbol|zoom|time_ms``.
    """
    if not valid_symbol(symbol):  # ours, from the config: a bug, not upstream input
        raise ValueError(f"chart_points: not a valid symbol: {symbol[:40]!r}")
    obj = _decoded(raw)
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, dict):
        raise _invalid("chart: missing data object")

    def parse_point(entry: tuple[str, Any]) -> Parsed:
        when, point = entry
        if not isinstance(point, dict):
            raise _invalid(f"chart point {when!r}: expected an object")
        time_ms = timestamp_ms(point.get("dateTime", when), "dateTime")
        record = {
            "symbol": symbol,
            "zoom": zoom,
            "time_ms": time_ms,
            "message_volume_normalized": _opt_float(point.get("messageVolumeNormalized")),
            "message_volume_label": _opt_str(point.get("messageVolumeNormalizedLabel")),
            "sentiment_normalized": _opt_float(point.get("sentimentNormalized")),
            "sentiment_label": _opt_str(point.get("sentimentNormalizedLabel")),
            "fetched_at_ms": fetched_at_ms,
        }
        return Parsed(SENTIMENT_CHART, chart_key(symbol, zoom, time_ms), record)

    items, rejected = _each(list(data.items()), parse_point)
    items.sort(key=lambda p: p.record["time_ms"])
    return ChartPage(items, rejected)


# --- REST API v2 streams --------------------------------------------------------------------


def rest_stream(raw: bytes | str | Any, *, origin: str = "rest") -> RestPage:
    """A REST v2 stream response ``{"messages": [...], "cursor": {...}}`` (or a bare list of
    messages, as some captures store them) → ``MessageEvent`` creates, newest first as sent.
    """
    obj = _decoded(raw)
    cursor: Mapping[str, Any]
    if isinstance(obj, list):
        messages, cursor = obj, {}
    elif isinstance(obj, dict) and isinstance(obj.get("messages"), list):
        messages, cursor = obj["messages"], _opt_dict(obj.get("cursor"))
    else:
        raise _invalid("REST stream: expected {'messages': [...]} or a list of messages")
    items, rejected = _each(messages, lambda m: message_event(m, origin=origin))
    return RestPage(
        items,
        rejected,
        Cursor(
            _opt_int(cursor.get("since")), _opt_int(cursor.get("max")), cursor.get("more") is True
        ),
    )


# --- history CSV (flattened captures) -------------------------------------------------------

CASHTAG = re.compile(r"\$([A-Za-z][A-Za-z0-9]{0,9}(?:\.[A-Za-z]{1,4})?)\b")
SYNTHETIC_ID_BASE = 1 << 61  # ids at or above this were derived, not issued by Stocktwits


def cashtags(text: str) -> list[str]:
    """``$AAPL``-style tickers in a message body, upper-cased, first occurrence order."""
    return list(dict.fromkeys(m.upper() for m in CASHTAG.findall(text)))


def derived_message_id(created_at: str, user_id: int, text: str) -> int:
    """A stable id for captures without ``message_id`` (the BTC/ETH history files).

    Deterministic, so replaying the same file twice yields the same keys; at or above
    :data:`SYNTHETIC_ID_BASE`, far above real Stocktwits ids, so it never collides with one.
    """
    digest = hashlib.blake2b(f"{created_at}|{user_id}|{text}".encode(), digest_size=8).digest()
    return SYNTHETIC_ID_BASE | (int.from_bytes(digest, "big") >> 3)


def history_row(
    row: Mapping[str, str | None], *, default_symbol: str | None = None, origin: str = "replay"
) -> Parsed:
    """One row of a flattened history CSV → a ``MessageEvent`` create.

    Columns ``created_at,user_name,user_id,bear_bull_tag,text[,message_id]`` (anshulrao
    history) or ``id,body,created_at,sentiment,likes,user_id`` (bilardi collection). Symbols
    are the body's cashtags, else ``default_symbol`` (the file's symbol).
    """
    text = row.get("text")
    if text is None:
        text = row.get("body")
    if text is None:
        raise _invalid("history row: missing text/body column")
    created = row.get("created_at")
    created_ms = timestamp_ms(created, "created_at")
    user_id = _req_int(row, "user_id")
    raw_id = row.get("message_id") or row.get("id")
    message_id = (
        _req_int({"id": raw_id}, "id")
        if raw_id
        else derived_message_id(str(created), user_id, text)
    )
    symbols = cashtags(text) or ([default_symbol] if default_symbol else [])
    label = row.get("bear_bull_tag") or row.get("sentiment")
    likes = _opt_float(row.get("likes"))
    body = {
        "id": message_id,
        "body": text,
        "created_at_ms": created_ms,
        "user": _user({"id": user_id, "username": row.get("user_name") or f"user{user_id}"}),
        "symbols": [symbol_ref({"symbol": s}) for s in symbols],
        "sentiment": label if label in SENTIMENTS else None,
        "sentiment_score": None,
        "conversation": None,
        "likes_count": int(likes) if likes is not None else 0,
        "reshares_count": 0,
        "reshared_message_id": None,
        "links": [],
        "source": None,
        "mentioned_users": [],
        "prices": [],
        "chart_url": None,
    }
    record = {
        "action": "create",
        "message_id": message_id,
        "event_time_ms": created_ms,
        "seq_id": None,
        "origin": origin,
        "message": body,
    }
    return Parsed(MESSAGES, str(message_id), record)

//! The native fast paths. The fan-out's (`message_reader.rs`): a framed Avro `MessageEvent` →
//! the few fields that become mentions. The producers' (this file): a Firehose `Message`
//! `create` envelope, as raw JSON bytes, straight to the Confluent-framed Avro `MessageEvent`
//! value, with no Python objects between.
//!
//! It mirrors `producers/parse.py` (`_message_create_fast`, `_message_fast` and the helpers
//! they call) and `schemas/avro_writer.py` for `schemas/message_event.avsc`, and returns
//! `None` — "defer": the caller runs the Python path, which decides as it always did — for
//! anything it is not certain to turn into exactly the bytes the Python path would produce:
//! oversized or non-UTF-8 input, anything serde_json rejects, another object or action, a
//! field of a type the Python fast path would hand to its careful path, a timestamp outside
//! `YYYY-MM-DDTHH:MM:SS[.f{1,6}][Z]`, an integer outside the Avro long range, a number where
//! Python would format or parse text (`_opt_str(5)`, `_opt_float("1,5")`), a negative zero in
//! a double field (orjson reads `-0` as the int 0). Equality with the Python path is pinned by
//! the differential tests in `tests/unit/producers/test_native.py`.
//!
//! JSON is read with serde_json into the few fields the record needs; every other value is
//! still fully decoded (numbers range-checked, strings unescaped) and dropped, so an input
//! orjson rejects (`1e400`, a lone surrogate escape) is never accepted here. A key given twice
//! keeps its last value, as a Python dict does.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use pyo3::prelude::*;

mod message_reader;
use pyo3::types::PyBytes;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// `producers.parse.MAX_PAYLOAD_BYTES`: a bigger input is the Python path's `too_large`.
const MAX_PAYLOAD_BYTES: usize = 1 << 20;

// --- JSON values, as Python sees them after orjson.loads ------------------------------------

/// A JSON string; borrowed from the input unless it had escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON value, kept only as far as the parse rules look at it.
enum Any<'a> {
    Null,
    Bool(bool),
    /// An integer in the Avro long range.
    Int(i64),
    /// An integer above `i64::MAX` (orjson: a Python int up to 2**64 - 1; Avro cannot take it).
    BigInt,
    /// A float literal, or an integer beyond orjson's int range, or `-0`.
    Float(f64),
    Str(Cow<'a, str>),
    List,
    Dict,
}

/// Decodes and drops one value of any kind: what serde's `IgnoredAny` would skip unchecked
/// (`1e400`, `"\ud800"`) is an error here, as it is for orjson.
struct Skip;

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

impl<'de> Deserialize<'de> for Any<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Any<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Any::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Any::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Any::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Any::BigInt, Any::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Any::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Any::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Any::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Any::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                SkipVisitor.visit_seq(seq).map(|_| Any::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                SkipVisitor.visit_map(map).map(|_| Any::Dict)
            }
        }
        d.deserialize_any(V)
    }
}

/// A value the parse rules read as a dict when it is one (`_opt_dict`), else as nothing.
enum DictOr<T> {
    Dict(T),
    Other,
}

/// A value the parse rules read as a list when it is one (`_opt_list`), else as nothing.
enum ListOr<T> {
    List(Vec<T>),
    Other,
}

macro_rules! lenient_visitor {
    ($wrapper:ident, $what:literal, $($body:tt)*) => {
        impl<'de, T: Deserialize<'de>> Deserialize<'de> for $wrapper<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V<T>(PhantomData<T>);
                impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                    type Value = $wrapper<T>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                        Ok($wrapper::Other)
                    }
                    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                        Ok($wrapper::Other)
                    }
                    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                        Ok($wrapper::Other)
                    }
                    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                        Ok($wrapper::Other)
                    }
                    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                        Ok($wrapper::Other)
                    }
                    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                        Ok($wrapper::Other)
                    }
                    $($body)*
                }
                d.deserialize_any(V(PhantomData))
            }
        }
    };
}

lenient_visitor!(DictOr, "any JSON value",
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_seq(seq).map(|_| DictOr::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(DictOr::Dict)
    }
);

lenient_visitor!(ListOr, "any JSON value",
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(ListOr::List)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_map(map).map(|_| ListOr::Other)
    }
);

/// A JSON object read into the named fields (`Option`: absent and null alike are `None`, as
/// `dict.get` has it); every other key's value is decoded and dropped; a repeated key keeps
/// its last value. Anything but an object is an error (the caller defers).
macro_rules! record {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        struct $name<'a> {
            $($field: Option<$ty>,)*
            _input: PhantomData<&'a str>,
        }

        impl<'de> Deserialize<'de> for $name<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " object"))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                        let mut out = $name { $($field: None,)* _input: PhantomData };
                        while let Some(key) = map.next_key::<Str<'de>>()? {
                            match &*key.0 {
                                $(stringify!($field) => out.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<Skip>()?;
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

record!(Envelope { object: Any<'a>, action: Any<'a>, data: Message<'a>, time: Any<'a>, seq_id: Any<'a> });

record!(Message {
    id: i64,
    body: Str<'a>,
    created_at: Any<'a>,
    user: User<'a>,
    symbols: Vec<SymbolRef<'a>>,
    entities: Entities<'a>,
    source: Source<'a>,
    mentioned_users: Vec<Any<'a>>,
    sentiment: DictOr<Score<'a>>,
    conversation: DictOr<Conversation<'a>>,
    likes: DictOr<Likes<'a>>,
    reshares: DictOr<Reshares<'a>>,
    reshare_message: DictOr<Reshare<'a>>,
    links: ListOr<DictOr<Link<'a>>>,
    prices: ListOr<DictOr<Price<'a>>>,
});

record!(User {
    id: i64,
    username: Str<'a>,
    name: Str<'a>,
    official: Any<'a>,
    identity: Str<'a>,
    classification: Vec<Any<'a>>,
    join_date: Str<'a>,
    followers: i64,
    following: i64,
    ideas: i64,
    watchlist_stocks_count: i64,
});

record!(SymbolRef {
    symbol: Str<'a>,
    id: i64,
    title: Str<'a>,
    exchange: Str<'a>,
    sector: Str<'a>,
    industry: Str<'a>,
    watchlist_count: i64,
    trending: bool,
    trending_score: Any<'a>,
});

record!(Entities { sentiment: DictOr<Label<'a>>, chart: DictOr<Chart<'a>> });
record!(Label { basic: Any<'a> });
record!(Chart { url: Any<'a>, original: Any<'a> });
record!(Source { id: i64, title: Str<'a>, url: Str<'a> });
record!(Score { sentiment_score: Any<'a> });
record!(Conversation {
    parent_message_id: Any<'a>,
    in_reply_to_message_id: Any<'a>,
    parent: Any<'a>,
    replies: Any<'a>,
});
record!(Likes { total: Any<'a> });
record!(Reshares { reshared_count: Any<'a> });
record!(Reshare { message: DictOr<Reshared<'a>> });
record!(Reshared { id: Any<'a> });
record!(Link { url: Any<'a>, title: Any<'a>, shortened_url: Any<'a>, source: DictOr<LinkSource<'a>> });
record!(LinkSource { name: Any<'a> });
record!(Price { symbol: Any<'a>, price: Any<'a> });

// --- parse.py's helpers ---------------------------------------------------------------------

/// Not certain to match the Python path: the caller parses the input in Python.
struct Defer;

type Res<T> = Result<T, Defer>;

/// `_opt_int`: int → itself, bool / list / dict → None; a float or a string → defer (Python
/// converts them); an int beyond the long range → defer (the Avro encoder refuses it).
fn opt_int(v: &Option<Any>) -> Res<Option<i64>> {
    match v {
        None | Some(Any::Null | Any::Bool(_) | Any::List | Any::Dict) => Ok(None),
        Some(Any::Int(n)) => Ok(Some(*n)),
        Some(Any::BigInt | Any::Float(_) | Any::Str(_)) => Err(Defer),
    }
}

/// `_opt_float`: int or float → float, bool / list / dict → None; a string → defer. `-0.0`
/// defers: orjson reads the text `-0` as the int 0 (→ 0.0), serde_json as -0.0. Magnitudes
/// from 2**63 on defer too, so an integer literal too big for an int never gets here.
fn opt_float(v: &Option<Any>) -> Res<Option<f64>> {
    match v {
        None | Some(Any::Null | Any::Bool(_) | Any::List | Any::Dict) => Ok(None),
        Some(Any::Int(n)) => Ok(Some(*n as f64)),
        Some(Any::Float(x)) if *x == 0.0 && x.is_sign_negative() => Err(Defer),
        Some(Any::Float(x)) if x.abs() < 9.223_372_036_854_776e18 => Ok(Some(*x)),
        Some(Any::Float(_) | Any::BigInt | Any::Str(_)) => Err(Defer),
    }
}

/// `_opt_str`: str → itself, bool / list / dict → None; a number → defer (Python formats it).
fn opt_str<'v, 'a>(v: &'v Option<Any<'a>>) -> Res<Option<&'v str>> {
    match v {
        None | Some(Any::Null | Any::Bool(_) | Any::List | Any::Dict) => Ok(None),
        Some(Any::Str(s)) => Ok(Some(s)),
        Some(Any::Int(_) | Any::BigInt | Any::Float(_)) => Err(Defer),
    }
}

fn is_true(v: &Option<Any>) -> bool {
    matches!(v, Some(Any::Bool(true)))
}

fn dict<T>(v: &Option<DictOr<T>>) -> Option<&T> {
    match v {
        Some(DictOr::Dict(t)) => Some(t),
        _ => None,
    }
}

fn list<T>(v: &Option<ListOr<T>>) -> &[T] {
    match v {
        Some(ListOr::List(items)) => items,
        _ => &[],
    }
}

/// The strings of a list, in order (`[c for c in … if isinstance(c, str)]`).
fn strings<'v, 'a>(items: &'v [Any<'a>]) -> impl Iterator<Item = &'v str> {
    items.iter().filter_map(|item| match item {
        Any::Str(s) => Some(&**s),
        _ => None,
    })
}

/// `timestamp_ms` of the text forms proven equal to `datetime.fromisoformat` (Python 3.11):
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1–6 digits, an optional `Z`; naive is UTC.
fn timestamp_ms(text: &str) -> Res<i64> {
    let b = text.as_bytes();
    let n = b.len();
    if n < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':'
    {
        return Err(Defer);
    }
    let num = |from: usize, to: usize| -> Res<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| {
            if c.is_ascii_digit() { Ok(acc * 10 + i64::from(c - b'0')) } else { Err(Defer) }
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut micros = 0;
    let mut at = 19;
    if at < n && b[at] == b'.' {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&digits) {
            return Err(Defer);
        }
        micros = num(at + 1, at + 1 + digits)? * 10i64.pow(6 - digits as u32);
        at += 1 + digits;
    }
    if at < n && b[at] == b'Z' {
        at += 1;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if at != n
        || year < 1
        || !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(Defer);
    }
    let days = days_from_civil(year, month, day);
    let us = ((days * 24 + hour) * 60 + minute) * 60 + second;
    Ok((us * 1_000_000 + micros).div_euclid(1000)) // `(dt - EPOCH) // 1 ms` floors
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// --- Avro, as schemas/avro_writer.py writes it ----------------------------------------------

struct Out(Vec<u8>);

impl Out {
    fn long(&mut self, v: i64) {
        let mut n = ((v << 1) ^ (v >> 63)) as u64; // zigzag
        while n >= 0x80 {
            self.0.push((n as u8 & 0x7F) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }
    fn boolean(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn string(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn double(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Branch 0 (`null`) of a `["null", X]` union, or branch 1 followed by the value.
    fn union<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.0.push(0),
            Some(x) => {
                self.0.push(2);
                write(self, x);
            }
        }
    }
    fn opt_str(&mut self, v: Option<&str>) {
        self.union(v, Self::string);
    }
    fn opt_long(&mut self, v: Option<i64>) {
        self.union(v, Self::long);
    }
    /// One block of `count` items, then the empty block that ends every array.
    fn array_start(&mut self, count: usize) {
        if count > 0 {
            self.long(count as i64);
        }
    }
    fn array_end(&mut self) {
        self.0.push(0);
    }
}

fn required<T>(v: Option<T>) -> Res<T> {
    v.ok_or(Defer)
}

/// `producers.parse.SYMBOL`: 1–24 ASCII characters, letters, digits and `._^=-`, the first a
/// letter, a digit or `^`. Anything else defers: the Python path is the one that decides
/// (dead letter, or a price entry left out), so the two cannot disagree on odd symbols.
fn plain_symbol(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'^' | b'=' | b'-');
    !b.is_empty() && b.len() <= 24 && (b[0].is_ascii_alphanumeric() || b[0] == b'^')
        && b.iter().all(inner)
}

/// `_message_create_fast`: (message id, seq_id, framed MessageEvent) or defer.
fn message_create(raw: &[u8], header: &[u8]) -> Res<(i64, Option<String>, Vec<u8>)> {
    if raw.len() > MAX_PAYLOAD_BYTES {
        return Err(Defer);
    }
    let text = std::str::from_utf8(raw).map_err(|_| Defer)?;
    let env: Envelope = serde_json::from_str(text).map_err(|_| Defer)?;
    if !matches!(&env.object, Some(Any::Str(s)) if s == "Message")
        || !matches!(&env.action, Some(Any::Str(s)) if s == "create")
    {
        return Err(Defer);
    }
    let data = required(env.data)?;
    let seq = match &env.seq_id {
        None | Some(Any::Null) => None,
        Some(Any::Str(s)) if s.is_empty() => None,
        Some(Any::Str(s)) => Some(s.to_string()),
        Some(_) => return Err(Defer), // _seq_id's other cases: rare, left to Python
    };
    // `time`, else the message's created_at; created_at equal to it reuses its value
    let when = match &env.time {
        None | Some(Any::Null) => &data.created_at,
        some => some,
    };
    let Some(Any::Str(when)) = when else { return Err(Defer) };
    let time_ms = timestamp_ms(when)?;
    let created_ms = match &data.created_at {
        Some(Any::Str(created)) if created == when => time_ms,
        Some(Any::Str(created)) => timestamp_ms(created)?,
        _ => return Err(Defer),
    };

    let message_id = required(data.id)?;
    let body = required(data.body.as_ref())?;
    let user = required(data.user.as_ref())?;
    let user_id = required(user.id)?;
    let username = required(user.username.as_ref())?;

    let mut symbols = Vec::new();
    for s in data.symbols.iter().flatten() {
        let symbol = required(s.symbol.as_ref())?;
        if !plain_symbol(&symbol.0) {
            return Err(Defer); // Python dead-letters it, with the reason
        }
        symbols.push((symbol, s, opt_float(&s.trending_score)?));
    }

    let (mut sentiment, mut chart_url) = (None, None);
    if let Some(entities) = &data.entities {
        if let Some(label) = dict(&entities.sentiment) {
            sentiment = match &label.basic {
                Some(Any::Str(s)) if s == "Bullish" => Some(0),
                Some(Any::Str(s)) if s == "Bearish" => Some(1),
                _ => None,
            };
        }
        if let Some(chart) = dict(&entities.chart) {
            // `_opt_str(url) or _opt_str(original)`: an empty url counts as none
            chart_url = match opt_str(&chart.url)? {
                Some(url) if !url.is_empty() => Some(url),
                _ => opt_str(&chart.original)?,
            };
        }
    }

    let score = match dict(&data.sentiment) {
        Some(s) => opt_float(&s.sentiment_score)?,
        None => None,
    };
    let conversation = match dict(&data.conversation) {
        Some(c) => Some((
            opt_int(&c.parent_message_id)?,
            opt_int(&c.in_reply_to_message_id)?,
            is_true(&c.parent),
            opt_int(&c.replies)?.unwrap_or(0),
        )),
        None => None,
    };
    let likes = match dict(&data.likes) {
        Some(l) => opt_int(&l.total)?.unwrap_or(0),
        None => 0,
    };
    let reshares = match dict(&data.reshares) {
        Some(r) => opt_int(&r.reshared_count)?.unwrap_or(0),
        None => 0,
    };
    let reshared_id = match dict(&data.reshare_message).and_then(|r| dict(&r.message)) {
        Some(m) => opt_int(&m.id)?,
        None => None,
    };
    let mut links = Vec::new();
    for link in list(&data.links) {
        if let DictOr::Dict(link) = link
            && let Some(Any::Str(url)) = &link.url
        {
            let source_name = match dict(&link.source) {
                Some(s) => opt_str(&s.name)?,
                None => None,
            };
            links.push((&**url, opt_str(&link.title)?, opt_str(&link.shortened_url)?, source_name));
        }
    }
    let mut prices = Vec::new();
    for price in list(&data.prices) {
        if let DictOr::Dict(price) = price
            && let Some(Any::Str(symbol)) = &price.symbol
        {
            if !plain_symbol(symbol) {
                return Err(Defer); // Python leaves the entry out
            }
            prices.push((&**symbol, opt_str(&price.price)?));
        }
    }

    // every value is known now: write the record (nothing below can defer)
    let mut out = Out(Vec::with_capacity(header.len() + raw.len() / 2 + 64));
    out.0.extend_from_slice(header);
    out.0.push(0); // action: create
    out.long(message_id);
    out.long(time_ms);
    out.opt_str(seq.as_deref());
    out.string("firehose");
    out.0.push(2); // message: the record branch
    out.long(message_id);
    out.string(&body.0);
    out.long(created_ms);
    // user
    out.long(user_id);
    out.string(&username.0);
    out.opt_str(user.name.as_ref().map(|s| &*s.0));
    out.boolean(is_true(&user.official));
    out.opt_str(user.identity.as_ref().map(|s| &*s.0));
    let classification = user.classification.as_deref().unwrap_or(&[]);
    out.array_start(strings(classification).count());
    strings(classification).for_each(|c| out.string(c));
    out.array_end();
    out.opt_str(user.join_date.as_ref().map(|s| &*s.0));
    out.opt_long(user.followers);
    out.opt_long(user.following);
    out.opt_long(user.ideas);
    out.opt_long(user.watchlist_stocks_count);
    // symbols
    out.array_start(symbols.len());
    for (symbol, s, trending_score) in symbols {
        out.string(&symbol.0);
        out.opt_long(s.id);
        out.opt_str(s.title.as_ref().map(|s| &*s.0));
        out.opt_str(s.exchange.as_ref().map(|s| &*s.0));
        out.opt_str(s.sector.as_ref().map(|s| &*s.0));
        out.opt_str(s.industry.as_ref().map(|s| &*s.0));
        out.opt_long(s.watchlist_count);
        out.union(s.trending, Out::boolean);
        out.union(trending_score, Out::double);
    }
    out.array_end();
    out.union(sentiment, Out::long); // UserSentiment: Bullish 0, Bearish 1
    out.union(score, Out::double);
    out.union(conversation, |out, (parent_id, in_reply_to, parent, replies)| {
        out.opt_long(parent_id);
        out.opt_long(in_reply_to);
        out.boolean(parent);
        out.long(replies);
    });
    out.long(likes);
    out.long(reshares);
    out.opt_long(reshared_id);
    out.array_start(links.len());
    for (url, title, shortened_url, source_name) in links {
        out.string(url);
        out.opt_str(title);
        out.opt_str(shortened_url);
        out.opt_str(source_name);
    }
    out.array_end();
    out.union(data.source.as_ref(), |out, s| {
        out.opt_long(s.id);
        out.opt_str(s.title.as_ref().map(|s| &*s.0));
        out.opt_str(s.url.as_ref().map(|s| &*s.0));
    });
    let mentioned = data.mentioned_users.as_deref().unwrap_or(&[]);
    out.array_start(strings(mentioned).count());
    strings(mentioned).for_each(|u| out.string(u));
    out.array_end();
    out.array_start(prices.len());
    for (symbol, price) in prices {
        out.string(symbol);
        out.opt_str(price);
    }
    out.array_end();
    out.opt_str(chart_url);
    Ok((message_id, seq, out.0))
}

/// A Firehose ``/stream`` event that is a ``Message`` ``create`` of the common shape →
/// ``(message_id, seq_id, header + Avro MessageEvent body)``; ``None`` for anything else
/// (the Python path then parses it, with the same result it always had).
#[pyfunction]
fn firehose_message<'py>(
    py: Python<'py>,
    raw: &[u8],
    header: &[u8],
) -> Option<(i64, Option<String>, Bound<'py, PyBytes>)> {
    let (message_id, seq, value) = message_create(raw, header).ok()?;
    Some((message_id, seq, PyBytes::new(py, &value)))
}

#[pymodule]
fn pulse_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(firehose_message, m)?)?;
    m.add_class::<message_reader::MessageReader>()?;
    m.add("MAX_PAYLOAD_BYTES", MAX_PAYLOAD_BYTES)?;
    Ok(())
}

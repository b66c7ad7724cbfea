//! The fan-out's native fast path: a Confluent-framed Avro `MessageEvent` → only the fields the
//! fan-out turns into mentions, without building the ~50-field record as Python dicts.
//!
//! A [`Plan`] is compiled once per writer schema (the registry's, by schema id) from its JSON:
//! for every field in writer order, either "skip a value of this type" or "read this". The
//! plan accepts only the shapes `schemas/message_event.avsc` gives the fields it reads
//! (`action` an enum, ids and times `int`/`long`, `message` a union of null and a record,
//! `user.id` a long, `symbols` an array of records with a string `symbol`, `sentiment` an enum
//! or a union of null and an enum); any other shape is refused when the plan is built, and the
//! caller decodes that schema's records with fastavro instead. Every value it skips is still
//! read as fastavro reads it (lengths checked, strings valid UTF-8, enum and union indexes in
//! range), so bytes fastavro rejects are rejected here. It is stricter in one respect: a
//! negative union or enum index, which fastavro takes as a Python index from the end (corrupt
//! bytes read as a record), is refused. Equality with the fastavro path is pinned by the
//! differential tests in `tests/unit/processors/test_message_reader.py`.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::Value;

// --- the writer schema, as a type graph -----------------------------------------------------

enum Ty {
    Null,
    Boolean,
    Long, // int and long: both zigzag varints
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize),
    Enum(Vec<String>),
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Record(Vec<(String, usize)>),
}

type SchemaResult<T> = Result<T, String>;

/// Named types are registered before their fields are parsed, so a record can refer to itself.
#[derive(Default)]
struct Graph {
    types: Vec<Ty>,
    named: HashMap<String, usize>,
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

impl Graph {
    fn add(&mut self, ty: Ty) -> usize {
        self.types.push(ty);
        self.types.len() - 1
    }

    fn parse(&mut self, node: &Value, namespace: &str) -> SchemaResult<usize> {
        match node {
            Value::String(name) => self.by_name(name, namespace),
            Value::Array(branches) => {
                let ids = branches
                    .iter()
                    .map(|b| self.parse(b, namespace))
                    .collect::<SchemaResult<Vec<_>>>()?;
                Ok(self.add(Ty::Union(ids)))
            }
            Value::Object(obj) => {
                let kind = obj.get("type").ok_or("a type without \"type\"")?;
                let Value::String(kind) = kind else {
                    return self.parse(kind, namespace); // {"type": {...}} or {"type": [...]}
                };
                match kind.as_str() {
                    "record" | "error" | "enum" | "fixed" => self.named_type(obj, kind, namespace),
                    "array" => {
                        let items = self.parse(obj.get("items").ok_or("array without items")?, namespace)?;
                        Ok(self.add(Ty::Array(items)))
                    }
                    "map" => {
                        let values = self.parse(obj.get("values").ok_or("map without values")?, namespace)?;
                        Ok(self.add(Ty::Map(values)))
                    }
                    other => self.by_name(other, namespace), // a primitive with attributes
                }
            }
            _ => Err(format!("not a schema: {node}")),
        }
    }

    fn by_name(&mut self, name: &str, namespace: &str) -> SchemaResult<usize> {
        let primitive = match name {
            "null" => Some(Ty::Null),
            "boolean" => Some(Ty::Boolean),
            "int" | "long" => Some(Ty::Long),
            "float" => Some(Ty::Float),
            "double" => Some(Ty::Double),
            "bytes" => Some(Ty::Bytes),
            "string" => Some(Ty::Str),
            _ => None,
        };
        if let Some(ty) = primitive {
            return Ok(self.add(ty));
        }
        let found = self.named.get(&full_name(name, namespace)).or_else(|| self.named.get(name));
        found.copied().ok_or_else(|| format!("unknown type {name:?}"))
    }

    fn named_type(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        kind: &str,
        namespace: &str,
    ) -> SchemaResult<usize> {
        let name = obj.get("name").and_then(Value::as_str).ok_or("a named type without a name")?;
        let ns = obj.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
        let full = full_name(name, ns);
        let inner_ns = full.rsplit_once('.').map_or("", |(ns, _)| ns).to_string();
        let id = self.add(Ty::Null); // placeholder until the fields are known
        self.named.insert(full, id);
        self.types[id] = match kind {
            "enum" => Ty::Enum(
                obj.get("symbols")
                    .and_then(Value::as_array)
                    .ok_or("enum without symbols")?
                    .iter()
                    .map(|s| s.as_str().map(str::to_string).ok_or("an enum symbol that is no string"))
                    .collect::<Result<_, _>>()?,
            ),
            "fixed" => Ty::Fixed(obj.get("size").and_then(Value::as_u64).ok_or("fixed without size")? as usize),
            _ => {
                let mut fields = Vec::new();
                for field in obj.get("fields").and_then(Value::as_array).ok_or("record without fields")? {
                    let fname = field.get("name").and_then(Value::as_str).ok_or("a field without a name")?;
                    let ty = self.parse(field.get("type").ok_or("a field without a type")?, &inner_ns)?;
                    fields.push((fname.to_string(), ty));
                }
                Ty::Record(fields)
            }
        };
        Ok(id)
    }
}

// --- reading Avro binary ------------------------------------------------------------------

struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

type ReadResult<T> = Result<T, String>;

impl<'a> Input<'a> {
    fn long(&mut self) -> ReadResult<i64> {
        let mut n: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = *self.data.get(self.at).ok_or("truncated (a long)")?;
            self.at += 1;
            if shift < 64 {
                n |= u64::from(b & 0x7F) << shift;
            }
            if b & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
            shift += 7;
        }
    }

    fn take(&mut self, n: usize) -> ReadResult<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("truncated")?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn length(&mut self) -> ReadResult<usize> {
        usize::try_from(self.long()?).map_err(|_| "a negative length".to_string())
    }

    fn string(&mut self) -> ReadResult<&'a str> {
        let n = self.length()?;
        std::str::from_utf8(self.take(n)?).map_err(|e| format!("a string that is not UTF-8: {e}"))
    }

    fn index(&mut self, count: usize, what: &str) -> ReadResult<usize> {
        let i = self.long()?;
        usize::try_from(i).ok().filter(|&i| i < count).ok_or_else(|| format!("{what} index {i} out of range"))
    }

    /// Item count of the next block of an array or map (0 ends it); a negative count is
    /// followed by the block's size in bytes, which is not needed here.
    fn block(&mut self) -> ReadResult<usize> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        usize::try_from(n.unsigned_abs()).map_err(|_| "a block too large".to_string())
    }

    fn skip(&mut self, g: &Graph, ty: usize) -> ReadResult<()> {
        match &g.types[ty] {
            Ty::Null => {}
            Ty::Boolean => {
                self.take(1)?;
            }
            Ty::Long => {
                self.long()?;
            }
            Ty::Float => {
                self.take(4)?;
            }
            Ty::Double => {
                self.take(8)?;
            }
            Ty::Bytes => {
                let n = self.length()?;
                self.take(n)?;
            }
            Ty::Str => {
                self.string()?;
            }
            Ty::Fixed(n) => {
                self.take(*n)?;
            }
            Ty::Enum(symbols) => {
                self.index(symbols.len(), "enum")?;
            }
            Ty::Array(items) => loop {
                let n = self.block()?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    self.skip(g, *items)?;
                }
            },
            Ty::Map(values) => loop {
                let n = self.block()?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    self.string()?;
                    self.skip(g, *values)?;
                }
            },
            Ty::Union(branches) => {
                let i = self.index(branches.len(), "union")?;
                self.skip(g, branches[i])?;
            }
            Ty::Record(fields) => {
                for (_, f) in fields {
                    self.skip(g, *f)?;
                }
            }
        }
        Ok(())
    }
}

// --- the plan: what to read, what to skip -------------------------------------------------

enum Step<T> {
    Skip(usize),
    Read(T),
}

enum Top {
    Action(Vec<bool>), // per enum symbol: is it "create"
    MessageId,
    EventTime,
    Message(Vec<Option<Vec<Step<Body>>>>), // per union branch: null, or the Message record
}

enum Body {
    CreatedAt,
    UserId(Vec<Step<()>>), // the User record: its id, the rest skipped
    Symbols(Vec<Step<()>>), // the SymbolRef record: its symbol, the rest skipped
    Sentiment(Vec<Option<Vec<String>>>), // per union branch: null, or the enum's symbols
}

/// The fields of one MessageEvent the fan-out needs.
#[derive(Default)]
struct Parts<'a> {
    create: bool,
    message_id: i64,
    event_time_ms: i64,
    body: Option<BodyParts<'a>>,
}

#[derive(Default)]
struct BodyParts<'a> {
    created_at_ms: i64,
    user_id: i64,
    sentiment: Option<String>,
    symbols: Vec<&'a str>,
}

fn fields_of(g: &Graph, ty: usize) -> SchemaResult<&Vec<(String, usize)>> {
    match &g.types[ty] {
        Ty::Record(fields) => Ok(fields),
        _ => Err("not a record".into()),
    }
}

fn require_long(g: &Graph, ty: usize, name: &str) -> SchemaResult<()> {
    match g.types[ty] {
        Ty::Long => Ok(()),
        _ => Err(format!("{name} is not an int or long")),
    }
}

/// Steps over a record's fields: `want(name, type)` gives the step of the fields read.
fn steps<T>(
    g: &Graph,
    ty: usize,
    needed: &[&str],
    mut want: impl FnMut(&str, usize) -> SchemaResult<Option<T>>,
) -> SchemaResult<Vec<Step<T>>> {
    let fields = fields_of(g, ty)?;
    for name in needed {
        if !fields.iter().any(|(f, _)| f == name) {
            return Err(format!("no field {name:?}"));
        }
    }
    fields
        .iter()
        .map(|(name, t)| Ok(want(name, *t)?.map_or(Step::Skip(*t), Step::Read)))
        .collect()
}

fn body_plan(g: &Graph, ty: usize) -> SchemaResult<Vec<Step<Body>>> {
    steps(g, ty, &["created_at_ms", "user", "symbols", "sentiment"], |name, t| {
        Ok(Some(match name {
            "created_at_ms" => {
                require_long(g, t, name)?;
                Body::CreatedAt
            }
            "user" => Body::UserId(steps(g, t, &["id"], |f, ft| {
                Ok((f == "id").then(|| require_long(g, ft, "user.id")).transpose()?)
            })?),
            "symbols" => {
                let Ty::Array(items) = g.types[t] else { return Err("symbols is not an array".into()) };
                Body::Symbols(steps(g, items, &["symbol"], |f, ft| match (f, &g.types[ft]) {
                    ("symbol", Ty::Str) => Ok(Some(())),
                    ("symbol", _) => Err("symbol is not a string".into()),
                    _ => Ok(None),
                })?)
            }
            "sentiment" => Body::Sentiment(optional_enum(g, t)?),
            _ => return Ok(None),
        }))
    })
}

fn optional_enum(g: &Graph, ty: usize) -> SchemaResult<Vec<Option<Vec<String>>>> {
    let branch = |t: usize| match &g.types[t] {
        Ty::Null => Ok(None),
        Ty::Enum(symbols) => Ok(Some(symbols.clone())),
        _ => Err("sentiment is not an enum".to_string()),
    };
    match &g.types[ty] {
        Ty::Union(branches) => branches.iter().map(|&b| branch(b)).collect(),
        _ => Ok(vec![branch(ty)?]), // a bare enum: one "branch", no index in the bytes
    }
}

fn top_plan(g: &Graph, root: usize) -> SchemaResult<Vec<Step<Top>>> {
    steps(g, root, &["action", "message_id", "event_time_ms", "message"], |name, t| {
        Ok(Some(match name {
            "action" => match &g.types[t] {
                Ty::Enum(symbols) => Top::Action(symbols.iter().map(|s| s == "create").collect()),
                _ => return Err("action is not an enum".into()),
            },
            "message_id" => {
                require_long(g, t, name)?;
                Top::MessageId
            }
            "event_time_ms" => {
                require_long(g, t, name)?;
                Top::EventTime
            }
            "message" => {
                let Ty::Union(branches) = &g.types[t] else { return Err("message is not a union".into()) };
                Top::Message(
                    branches
                        .iter()
                        .map(|&b| match g.types[b] {
                            Ty::Null => Ok(None),
                            Ty::Record(_) => body_plan(g, b).map(Some),
                            _ => Err("a message branch that is neither null nor a record".into()),
                        })
                        .collect::<SchemaResult<_>>()?,
                )
            }
            _ => return Ok(None),
        }))
    })
}

struct Plan {
    graph: Graph,
    top: Vec<Step<Top>>,
}

impl Plan {
    fn read<'a>(&self, input: &mut Input<'a>) -> ReadResult<Parts<'a>> {
        let mut parts = Parts::default();
        for step in &self.top {
            match step {
                Step::Skip(t) => input.skip(&self.graph, *t)?,
                Step::Read(Top::Action(is_create)) => {
                    parts.create = is_create[input.index(is_create.len(), "enum")?];
                }
                Step::Read(Top::MessageId) => parts.message_id = input.long()?,
                Step::Read(Top::EventTime) => parts.event_time_ms = input.long()?,
                Step::Read(Top::Message(branches)) => {
                    if let Some(body) = &branches[input.index(branches.len(), "union")?] {
                        parts.body = Some(self.read_body(body, input)?);
                    }
                }
            }
        }
        Ok(parts)
    }

    fn read_body<'a>(&self, plan: &[Step<Body>], input: &mut Input<'a>) -> ReadResult<BodyParts<'a>> {
        let mut body = BodyParts::default();
        for step in plan {
            match step {
                Step::Skip(t) => input.skip(&self.graph, *t)?,
                Step::Read(Body::CreatedAt) => body.created_at_ms = input.long()?,
                Step::Read(Body::UserId(user)) => {
                    for f in user {
                        match f {
                            Step::Skip(t) => input.skip(&self.graph, *t)?,
                            Step::Read(()) => body.user_id = input.long()?,
                        }
                    }
                }
                Step::Read(Body::Symbols(symbol)) => loop {
                    let n = input.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        for f in symbol {
                            match f {
                                Step::Skip(t) => input.skip(&self.graph, *t)?,
                                Step::Read(()) => body.symbols.push(input.string()?),
                            }
                        }
                    }
                },
                Step::Read(Body::Sentiment(branches)) => {
                    let i = if branches.len() == 1 { 0 } else { input.index(branches.len(), "union")? };
                    if let Some(symbols) = &branches[i] {
                        body.sentiment = Some(symbols[input.index(symbols.len(), "enum")?].clone());
                    }
                }
            }
        }
        Ok(body)
    }
}

// --- Python ---------------------------------------------------------------------------------

type PyBody<'a> = (i64, i64, Option<String>, Vec<&'a str>);

/// A MessageEvent writer schema's reader of the fan-out's fields. ``MessageReader(schema_json)``
/// raises ``ValueError`` for a schema whose fields it does not read (decode those with
/// fastavro); ``read(frame)`` takes a whole Confluent frame (5-byte header, then the Avro body)
/// and returns ``(create, message_id, event_time_ms, body)``, ``body`` being ``None`` or
/// ``(created_at_ms, user_id, sentiment, symbols)``; it raises ``ValueError`` for bytes that
/// are not a record of the schema.
#[pyclass(frozen, module = "pulse_native")]
pub struct MessageReader {
    plan: Plan,
}

#[pymethods]
impl MessageReader {
    #[new]
    fn new(schema_json: &str) -> PyResult<Self> {
        let schema: Value = serde_json::from_str(schema_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut graph = Graph::default();
        let plan = graph
            .parse(&schema, "")
            .and_then(|root| top_plan(&graph, root))
            .map_err(|e| PyValueError::new_err(format!("MessageEvent schema not readable natively: {e}")))?;
        Ok(Self { plan: Plan { graph, top: plan } })
    }

    fn read<'a>(&self, frame: &'a [u8]) -> PyResult<(bool, i64, i64, Option<PyBody<'a>>)> {
        if frame.len() < 5 || frame[0] != 0 {
            return Err(PyValueError::new_err(format!("not a Confluent Avro frame ({} bytes)", frame.len())));
        }
        let mut input = Input { data: frame, at: 5 };
        let parts = self.plan.read(&mut input).map_err(PyValueError::new_err)?;
        let body = parts.body.map(|b| (b.created_at_ms, b.user_id, b.sentiment, b.symbols));
        Ok((parts.create, parts.message_id, parts.event_time_ms, body))
    }
}

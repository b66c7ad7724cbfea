"""Avro schemas from ``schemas/*.avsc`` and the only place that builds registry serializers.

Values travel in the Confluent wire format (magic byte, schema id, Avro body); subjects
follow TopicNameStrategy; each subject is set to BACKWARD compatibility on first use.

Encoding writes that frame itself around :mod:`schemas.avro_writer` (fastavro for whatever
that declines): the bytes are those of confluent-kafka's ``AvroSerializer`` (pinned by a
test) at a fraction of its per-record cost. Decoding reads the frame's schema id, fetches
that writer schema from the registry once, and hands fastavro the writer and our reader
schema, parsed once per id: records written with older schema versions resolve to today's
shape, as with ``AvroDeserializer``, at about a fifth of its per-record cost.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import struct
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, cast

import fastavro
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
)

from pulse.schemas import avro_writer
from pulse.schemas.topics import TopicSpec
from pulse.settings import Settings, redact_url

SCHEMA_DIR = Path(__file__).resolve().parent
COMPATIBILITY = "BACKWARD"
MAGIC_BYTE = 0  # Confluent wire format v0: magic byte, 4-byte big-endian schema id, Avro body

_COMPLEX = {"record", "enum", "fixed", "array", "map"}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


# --- registry client logs --------------------------------------------------------------------
#
# The registry client talks through httpx (or its successor httpx2), which logs every request's
# full URL at INFO, user info included: with `PULSE_SCHEMA_REGISTRY_URL=http://user:pass@…` (a
# form the client accepts) the password would reach every log line. Its per-request lines are
# noise at INFO anyway: those loggers start at WARNING, and whatever they still log, at any
# level, has its URLs redacted.
HTTP_LOGGERS = ("httpx", "httpx2")


class RedactUrls(logging.Filter):
    """Rewrites URL arguments (and URLs in a pre-formatted message) of a record, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        if isinstance(record.msg, str) and "://" in record.msg:
            record.msg = " ".join(_redact_word(w) for w in record.msg.split(" "))
        return True


def _redact_arg(arg: object) -> object:
    if isinstance(arg, (int, float)) or arg is None:
        return arg
    text = str(arg)
    return redact_url(text) if "://" in text or "@" in text else arg


def _redact_word(word: str) -> str:
    return redact_url(word) if "://" in word else word


def quiet_http_loggers() -> None:
    """WARNING for the registry client's HTTP loggers, and their URLs redacted (idempotent)."""
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
        if not any(isinstance(f, RedactUrls) for f in logger.filters):
            logger.addFilter(RedactUrls())


quiet_http_loggers()


def _named_types() -> dict[str, dict[str, Any]]:
    """Every named type (record, enum, fixed) defined in any .avsc file, by full name."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any, namespace: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, namespace)
        elif isinstance(node, dict):
            ns = node.get("namespace", namespace)
            if node.get("type") in ("record", "enum", "fixed") and "name" in node:
                name = node["name"] if "." in node["name"] else f"{ns}.{node['name']}"
                found[name] = {**node, "name": name.rsplit(".", 1)[1], "namespace": ns}
            for key in ("type", "items", "values", "fields"):
                if key in node:
                    walk(node[key], ns)

    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        walk(json.loads(path.read_text()), "")
    return found


@cache
def load_schema(schema_file: str) -> dict[str, Any]:
    """A self-contained schema: types named in other .avsc files are inlined at first use.

    The registry then holds one complete schema per subject, no cross-subject references.
    """
    named = _named_types()
    root = json.loads((SCHEMA_DIR / schema_file).read_text())
    defined: set[str] = set()

    def resolve(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = node if "." in node else f"{namespace}.{node}"
            if full in defined:
                return full
            if full not in named:
                raise KeyError(f"{schema_file}: unknown type {node!r}")
            defined.add(full)
            return resolve(copy.deepcopy(named[full]), full.rsplit(".", 1)[0])
        if isinstance(node, list):
            return [resolve(item, namespace) for item in node]
        if isinstance(node, dict):
            ns = node.get("namespace", namespace)
            if node.get("type") in ("record", "enum", "fixed"):
                defined.add(node["name"] if "." in node["name"] else f"{ns}.{node['name']}")
            out = dict(node)
            for key in ("type", "items", "values"):
                if key in out and not (isinstance(out[key], str) and out[key] in _COMPLEX):
                    out[key] = resolve(out[key], ns)
            if "fields" in out:
                out["fields"] = [resolve_field(f, ns) for f in out["fields"]]
            return out
        return node

    def resolve_field(f: dict[str, Any], ns: str) -> dict[str, Any]:
        return {**f, "type": resolve(f["type"], ns)}

    return resolve(root, root.get("namespace", ""))


def schema_str(spec: TopicSpec) -> str:
    return json.dumps(load_schema(spec.schema_file))


def frame_header(schema_id: int) -> bytes:
    """The wire format's first five bytes: magic byte, then the schema id (big-endian)."""
    return struct.pack(">bI", MAGIC_BYTE, schema_id)


def wire_encoder(schema_id: int, schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """Encode records as the Confluent wire format: magic byte, schema id, schemaless Avro.

    The compiled writer encodes well-typed records; anything it declines (or a schema it
    cannot compile) goes through fastavro, so coercions, defaults and errors stay fastavro's.

    :param schema: the schema registered under ``schema_id``, as loaded (parsed here, once).
    """
    parsed = fastavro.parse_schema(schema)
    prefix = frame_header(schema_id)

    def slow(value: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(prefix)
        fastavro.schemaless_writer(out, parsed, value)
        return out.getvalue()

    try:
        # the frame is the writer's first bytes; whatever it declines goes to fastavro
        return avro_writer.compile_writer(schema, prefix=prefix, fallback=slow)
    except avro_writer.Unsupported:
        return slow


def wire_decoder(
    reader: dict[str, Any], writer_schema: Callable[[int], dict[str, Any]]
) -> Callable[[bytes], dict[str, Any]]:
    """Decode Confluent wire-format values into records of the ``reader`` schema.

    :param writer_schema: schema id → the schema the record was written with (registry).
    """
    reader_parsed = fastavro.parse_schema(reader)
    reader_form = fastavro.schema.to_parsing_canonical_form(reader_parsed)
    by_id: dict[int, tuple[Any, Any]] = {}

    def decode(data: bytes) -> dict[str, Any]:
        if len(data) < 5 or data[0] != MAGIC_BYTE:
            raise ValueError(f"not a Confluent Avro frame ({len(data)} bytes)")
        schema_id = int.from_bytes(data[1:5], "big")
        schemas = by_id.get(schema_id)
        if schemas is None:
            writer = fastavro.parse_schema(writer_schema(schema_id))
            same = fastavro.schema.to_parsing_canonical_form(writer) == reader_form
            # same schema: no resolution step, which fastavro does per record otherwise
            schemas = by_id[schema_id] = (writer, None if same else reader_parsed)
        # every topic's value schema is a record: fastavro reads it as a dict
        return cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(data[5:]), *schemas))

    return decode


class Serde:
    """Registry-backed Avro encode/decode for the topics in :mod:`schemas.topics`."""

    def __init__(self, settings: Settings, client: SchemaRegistryClient | None = None) -> None:
        self.settings = settings
        self.client = client or SchemaRegistryClient(settings.registry_config())
        self._serializers: dict[str, Callable[[dict[str, Any]], bytes]] = {}
        self._headers: dict[str, bytes] = {}
        self._deserializers: dict[str, Callable[[bytes], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def register(self, spec: TopicSpec) -> int:
        """Set the subject to BACKWARD and register the schema; returns the schema id."""
        subject = spec.value_subject(self.settings)
        self.client.set_compatibility(subject_name=subject, level=COMPATIBILITY)
        return self.client.register_schema(subject, Schema(schema_str(spec), "AVRO"))

    def serializer(self, spec: TopicSpec) -> Callable[[dict[str, Any]], bytes]:
        """Registers the topic's schema (once) and returns its wire-format encoder."""
        topic = spec.full_name(self.settings)
        with self._lock:
            ser = self._serializers.get(topic)
            if ser is None:
                schema_id = self.register(spec)
                ser = self._serializers[topic] = wire_encoder(
                    schema_id, load_schema(spec.schema_file)
                )
                self._headers[topic] = frame_header(schema_id)
        return ser

    def header(self, spec: TopicSpec) -> bytes:
        """The frame header ``serializer(spec)`` writes (registers the schema, once), for
        values encoded elsewhere (the native fast path, ``producers/native.py``)."""
        self.serializer(spec)
        return self._headers[spec.full_name(self.settings)]

    def deserializer(self, spec: TopicSpec) -> Callable[[bytes], dict[str, Any]]:
        """Wire-format decoder of the topic's values; raises ``ValueError`` (or fastavro's
        error) on anything that is not a readable frame."""
        topic = spec.full_name(self.settings)
        with self._lock:
            de = self._deserializers.get(topic)
            if de is None:
                de = self._deserializers[topic] = wire_decoder(
                    load_schema(spec.schema_file), self.writer_schema
                )
        return de

    @cache  # noqa: B019 - one Serde per process; ids are few and immutable
    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The schema registered under ``schema_id`` (asked once per id)."""
        # by id only: no subject lookups (Apicurio serves no "associations")
        text = self.client.get_schema(schema_id).schema_str
        if text is None:  # the client's Schema type allows it; a registry answers with the text
            raise ValueError(f"schema registry: schema {schema_id} came without its text")
        schema: dict[str, Any] = json.loads(text)
        return schema

    def encode(self, spec: TopicSpec, value: dict[str, Any]) -> bytes:
        return self.serializer(spec)(value)

    def decode(self, spec: TopicSpec, data: bytes) -> dict[str, Any]:
        return self.deserializer(spec)(data)

"""Avro schemas from ``schemas/*.avsc`` and the only place that builds registry serializers.

Values travel in the Confluent wire format (magic byte, schema id, Avro body); subjects
follow TopicNameStrategy; each subject is set to BACKWARD compatibility on first use.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.topics import TopicSpec
from settings import Settings

SCHEMA_DIR = Path(__file__).resolve().parent
COMPATIBILITY = "BACKWARD"

_COMPLEX = {"record", "enum", "fixed", "array", "map"}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


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


class Serde:
    """Registry-backed Avro encode/decode for the topics in :mod:`schemas.topics`."""

    def __init__(self, settings: Settings, client: SchemaRegistryClient | None = None) -> None:
        self.settings = settings
        self.client = client or SchemaRegistryClient(settings.registry_config())
        self._serializers: dict[str, AvroSerializer] = {}
        self._deserializers: dict[str, AvroDeserializer] = {}
        self._lock = threading.Lock()

    def register(self, spec: TopicSpec) -> int:
        """Set the subject to BACKWARD and register the schema; returns the schema id."""
        subject = spec.value_subject(self.settings)
        self.client.set_compatibility(subject_name=subject, level=COMPATIBILITY)
        return self.client.register_schema(subject, Schema(schema_str(spec), "AVRO"))

    def serializer(self, spec: TopicSpec) -> Callable[[dict[str, Any]], bytes]:
        topic = spec.full_name(self.settings)
        with self._lock:
            ser = self._serializers.get(topic)
            if ser is None:
                self.register(spec)
                ser = AvroSerializer(
                    self.client,
                    schema_str(spec),
                    conf={"auto.register.schemas": False, "use.latest.version": False},
                )
                self._serializers[topic] = ser
        ctx = SerializationContext(topic, MessageField.VALUE)
        return lambda value: ser(value, ctx)

    def deserializer(self, spec: TopicSpec) -> Callable[[bytes], dict[str, Any]]:
        topic = spec.full_name(self.settings)
        with self._lock:
            de = self._deserializers.get(topic)
            if de is None:
                # reader schema = ours, so old records resolve to today's shape
                de = AvroDeserializer(self.client, schema_str(spec))
                self._deserializers[topic] = de
        ctx = SerializationContext(topic, MessageField.VALUE)
        return lambda data: de(data, ctx)

    def encode(self, spec: TopicSpec, value: dict[str, Any]) -> bytes:
        return self.serializer(spec)(value)

    def decode(self, spec: TopicSpec, data: bytes) -> dict[str, Any]:
        return self.deserializer(spec)(data)

"""Avro binary encoding compiled from a schema into nested closures: the producers' hot path.

fastavro's writer looks up every value's type by comparing schema type names as strings and
picks each union branch by validating the value against the candidates; for a MessageEvent
(~50 fields) that is most of the producers' CPU time. :func:`compile_writer` resolves all of it
once per schema, so encoding a record is one call per field.

The compiled writer only accepts values whose Python type is exactly the one the schema names
(``int`` in range for int/long, ``float`` for double, ``str``, ``bytes``, ``bool``, ``dict``
for records, ``list`` for arrays, every field present) and raises :class:`Mismatch` for anything
else. Callers then fall back to fastavro, which applies its own coercions, defaults and error
messages: the compiled writer never decides anything fastavro would decide differently, and
its bytes are fastavro's (pinned by tests).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

Out = list[bytes]
Write = Callable[[Any, Out], None]

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
_ONE_BYTE = [bytes([i]) for i in range(0x80)]  # varints below 128: most lengths, counts, ids
_pack_double = struct.Struct("<d").pack


class Unsupported(ValueError):
    """The schema uses a construct this writer does not compile (use fastavro for it)."""


class Mismatch(ValueError):
    """A value this writer does not encode itself; fastavro decides (encode or reject)."""


def varint(n: int) -> bytes:
    """Unsigned LEB128 of a non-negative int (Avro lengths and zigzagged longs)."""
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _null(value: Any, out: Out) -> None:
    if value is not None:
        raise Mismatch("null")


def _boolean(value: Any, out: Out) -> None:
    if value is True:
        out.append(b"\x01")
    elif value is False:
        out.append(b"\x00")
    else:
        raise Mismatch("boolean")


def _integer(low: int, high: int) -> Write:
    def write(value: Any, out: Out) -> None:
        if type(value) is not int or not low <= value <= high:  # bool is not an Avro number
            raise Mismatch("int/long")
        n = (value << 1) ^ (value >> 63)  # zigzag: small magnitudes → short varints
        out.append(_ONE_BYTE[n] if n < 0x80 else varint(n))

    return write


def _double(value: Any, out: Out) -> None:
    if type(value) is not float:  # fastavro also takes ints here: left to it
        raise Mismatch("double")
    out.append(_pack_double(value))


def _string(value: Any, out: Out) -> None:
    if type(value) is not str:
        raise Mismatch("string")
    data = value.encode()
    n = len(data) << 1
    out.append(_ONE_BYTE[n] if n < 0x80 else varint(n))
    out.append(data)


def _bytes(value: Any, out: Out) -> None:
    if type(value) is not bytes:
        raise Mismatch("bytes")
    n = len(value) << 1
    out.append(_ONE_BYTE[n] if n < 0x80 else varint(n))
    out.append(value)


_PRIMITIVES: dict[str, Write] = {
    "null": _null,
    "boolean": _boolean,
    "int": _integer(INT_MIN, INT_MAX),
    "long": _integer(LONG_MIN, LONG_MAX),
    "double": _double,
    "string": _string,
    "bytes": _bytes,
}


def compile_writer(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """The schemaless Avro encoder of one record schema.

    :raises Unsupported: for maps, fixed, float, logical types and unions other than
        ``["null", X]`` (none of which our schemas use).
    """
    named: dict[str, Write] = {}

    def build(node: Any, namespace: str) -> Write:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return _PRIMITIVES[node]
            full = node if "." in node else f"{namespace}.{node}"
            if full not in named:
                raise Unsupported(f"unknown type {node!r}")
            return named[full]
        if isinstance(node, list):
            if len(node) == 2 and node[0] == "null":
                return _optional(build(node[1], namespace))
            raise Unsupported(f"union {node!r}")
        if not isinstance(node, dict) or "logicalType" in node:
            raise Unsupported(f"type {node!r}")
        kind = node.get("type")
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return _PRIMITIVES[kind]
        if kind == "record":
            return _record(node, namespace)
        if kind == "enum":
            named[_full_name(node, namespace)] = write_enum = _enum(node["symbols"])
            return write_enum
        if kind == "array":
            return _array(build(node["items"], namespace))
        raise Unsupported(f"type {kind!r}")

    def _record(node: dict[str, Any], namespace: str) -> Write:
        namespace = _full_name(node, namespace).rsplit(".", 1)[0]
        fields: list[tuple[str, Write]] = []  # filled below, after the name is known

        def write(value: Any, out: Out) -> None:
            if type(value) is not dict:
                raise Mismatch("record")
            for field, write_field in fields:
                write_field(value[field], out)  # a missing field: KeyError, fastavro decides

        # named before its fields are built, so a field may refer back to this record
        named[_full_name(node, namespace)] = write
        fields.extend((f["name"], build(f["type"], namespace)) for f in node["fields"])
        return write

    root = build(schema, schema.get("namespace", ""))

    def encode(record: dict[str, Any]) -> bytes:
        out: Out = []
        root(record, out)
        return b"".join(out)

    return encode


def _full_name(node: dict[str, Any], namespace: str) -> str:
    name: str = node["name"]
    return name if "." in name else f"{node.get('namespace', namespace)}.{name}"


def _optional(inner: Write) -> Write:
    def write(value: Any, out: Out) -> None:
        if value is None:
            out.append(b"\x00")  # branch 0: null
        else:
            out.append(b"\x02")  # branch 1, zigzagged
            inner(value, out)

    return write


def _enum(symbols: list[str]) -> Write:
    index = {s: varint(i << 1) for i, s in enumerate(symbols)}

    def write(value: Any, out: Out) -> None:
        out.append(index[value])  # an unknown symbol: KeyError, fastavro decides

    return write


def _array(item: Write) -> Write:
    def write(value: Any, out: Out) -> None:
        if type(value) is not list:
            raise Mismatch("array")
        if value:  # one block of len(value) items, then the empty block that ends the array
            n = len(value) << 1
            out.append(_ONE_BYTE[n] if n < 0x80 else varint(n))
            for v in value:
                item(v, out)
        out.append(b"\x00")

    return write

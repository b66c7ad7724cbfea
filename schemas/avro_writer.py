"""Avro binary encoding compiled from a schema into one generated function: the producers' hot path.

fastavro's writer looks up every value's type by comparing schema type names as strings and
picks each union branch by validating the value against the candidates; for a MessageEvent
(~50 fields) that is most of the producers' CPU time. :func:`compile_writer` resolves all of it
once per schema and generates the Python source of one function that writes the record field by
field, nested records, unions and arrays inlined: no call per field, no dispatch per value.

The compiled writer only accepts values whose Python type is exactly the one the schema names
(``int`` in range for int/long, ``float`` for double, ``str``, ``bytes``, ``bool``, ``dict``
for records, ``list`` for arrays, every field present) and raises :class:`Mismatch` (or, for a
missing field or unknown enum symbol, ``KeyError``) for anything else. Callers then fall back to
fastavro, which applies its own coercions, defaults and error messages: the compiled writer never
decides anything fastavro would decide differently, and its bytes are fastavro's (pinned by
tests).
"""

from __future__ import annotations

import itertools
import linecache
import struct
from collections.abc import Callable
from typing import Any

Encode = Callable[[dict[str, Any]], bytes]

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1


class Unsupported(ValueError):
    """The schema uses a construct this writer does not compile (use fastavro for it)."""


class Mismatch(ValueError):
    """A value this writer does not encode itself; fastavro decides (encode or reject)."""


def varint(n: int) -> bytes:
    """Unsigned LEB128 of a non-negative int (Avro lengths and zigzagged longs)."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints are written 14 bits at a time from two tables instead of 7 bits per loop turn: a
# timestamp in ms (6 varint bytes) is three lookups, not a six-turn Python loop (~1 µs each).
_LAST14 = [varint(i) for i in range(1 << 14)]  # the whole varint of a value < 2**14
# two 7-bit groups that are not the last: both bytes carry the continuation bit
_MORE14 = [bytes(((i & 0x7F) | 0x80, (i >> 7) | 0x80)) for i in range(1 << 14)]

# the names the generated code uses: nothing else is reachable from it
_GLOBALS: dict[str, Any] = {
    "Mismatch": Mismatch,
    "varint": varint,
    "L14": _LAST14,
    "M14": _MORE14,
    "pack_double": struct.Struct("<d").pack,
    "bytes": bytes,
    "bytearray": bytearray,
    "dict": dict,
    "list": list,
    "int": int,
    "float": float,
    "str": str,
    "len": len,
    "type": type,
}


def _uvarint(n: str, ind: str) -> list[str]:
    """Lines appending the varint of the zigzagged long named ``n`` to ``out``."""
    return [
        f"{ind}if {n} < 0x4000:",
        f"{ind}    out += L14[{n}]",
        f"{ind}elif {n} < 0x10000000:",  # < 2**28: ids, counts
        f"{ind}    out += M14[{n} & 0x3FFF]",
        f"{ind}    out += L14[{n} >> 14]",
        f"{ind}elif {n} < 0x40000000000:",  # < 2**42: epoch-ms timestamps, 64-bit ids' low end
        f"{ind}    out += M14[{n} & 0x3FFF]",
        f"{ind}    out += M14[{n} >> 14 & 0x3FFF]",
        f"{ind}    out += L14[{n} >> 28]",
        f"{ind}elif {n} < 0x10000000000000000:",
        f"{ind}    out += varint({n})",
        f"{ind}else:",  # the zigzag of a long below -2**63 or above 2**63 - 1 is at least 2**64
        f"{ind}    raise Mismatch('long')",
    ]


def _length(n: str, ind: str) -> list[str]:
    """Lines appending a zigzagged length already in ``n`` (short: strings, arrays)."""
    return [f"{ind}out += L14[{n}] if {n} < 0x4000 else varint({n})"]


class _Generator:
    """Emits the body of the encoder for one schema, one line at a time."""

    def __init__(self) -> None:
        self.globals: dict[str, Any] = dict(_GLOBALS)
        # full name → ("record", node, namespace of its fields) or ("enum", table global)
        self.named: dict[str, tuple[str, Any, str]] = {}
        self.functions: dict[str, str] = {}  # records referenced by name → their function
        self.pending: list[str] = []  # such records whose function is still to be generated
        self._ids = itertools.count()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def emit(self, node: Any, namespace: str, v: str, ind: str) -> list[str]:
        """Lines that write the value named ``v`` of schema ``node`` to ``out``."""
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return _PRIMITIVES[node](v, ind)
            full = node if "." in node else f"{namespace}.{node}"
            if full not in self.named:
                raise Unsupported(f"unknown type {node!r}")
            named_kind, target, _ = self.named[full]
            if named_kind == "enum":
                return [f"{ind}out += {target}[{v}]"]  # unknown symbol: KeyError, fastavro decides
            # a record used again by name (or recursively): one generated function, called
            if full not in self.functions:
                self.functions[full] = self.fresh("write_record")
                self.pending.append(full)
            return [f"{ind}{self.functions[full]}({v}, out)"]
        if isinstance(node, list):
            if len(node) == 2 and node[0] == "null":
                return [
                    f"{ind}if {v} is None:",
                    f"{ind}    out += b'\\x00'",  # branch 0: null
                    f"{ind}else:",
                    f"{ind}    out += b'\\x02'",  # branch 1, zigzagged
                    *self.emit(node[1], namespace, v, ind + "    "),
                ]
            raise Unsupported(f"union {node!r}")
        if not isinstance(node, dict) or "logicalType" in node:
            raise Unsupported(f"type {node!r}")
        kind = node.get("type")
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return _PRIMITIVES[kind](v, ind)
        if kind == "record":
            full = _full_name(node, namespace)
            # named before its fields are generated, so a field may refer back to this record
            self.named[full] = ("record", node, full.rsplit(".", 1)[0])
            return self.record(full, v, ind)
        if kind == "enum":
            full = _full_name(node, namespace)
            table = self.fresh("enum")
            self.globals[table] = {s: varint(i << 1) for i, s in enumerate(node["symbols"])}
            self.named[full] = ("enum", table, "")
            return [f"{ind}out += {table}[{v}]"]
        if kind == "array":
            item, n = self.fresh("item"), self.fresh("n")
            return [
                f"{ind}if type({v}) is not list:",
                f"{ind}    raise Mismatch('array')",
                f"{ind}if {v}:",  # one block of len(v) items, then the empty block that ends it
                f"{ind}    {n} = len({v}) << 1",
                *_length(n, ind + "    "),
                f"{ind}    for {item} in {v}:",
                *self.emit(node["items"], namespace, item, ind + "        "),
                f"{ind}out += b'\\x00'",
            ]
        raise Unsupported(f"type {kind!r}")

    def record(self, full: str, v: str, ind: str) -> list[str]:
        _, node, namespace = self.named[full]
        lines = [f"{ind}if type({v}) is not dict:", f"{ind}    raise Mismatch('record')"]
        for f in node["fields"]:
            value = self.fresh("v")
            lines.append(f"{ind}{value} = {v}[{f['name']!r}]")  # missing: KeyError, fastavro's
            lines.extend(self.emit(f["type"], namespace, value, ind))
        return lines


def _null(v: str, ind: str) -> list[str]:
    return [f"{ind}if {v} is not None:", f"{ind}    raise Mismatch('null')"]


def _boolean(v: str, ind: str) -> list[str]:
    return [
        f"{ind}if {v} is True:",
        f"{ind}    out += b'\\x01'",
        f"{ind}elif {v} is False:",
        f"{ind}    out += b'\\x00'",
        f"{ind}else:",
        f"{ind}    raise Mismatch('boolean')",
    ]


def _int(v: str, ind: str) -> list[str]:
    return [
        f"{ind}if type({v}) is not int or not {INT_MIN} <= {v} <= {INT_MAX}:",  # bool: no number
        f"{ind}    raise Mismatch('int')",
        f"{ind}n = ({v} << 1) ^ ({v} >> 63)",  # zigzag: small magnitudes → short varints
        *_uvarint("n", ind),
    ]


def _long(v: str, ind: str) -> list[str]:
    # the range check is the last branch of the varint: a long's hot path has no extra compare
    return [
        f"{ind}if type({v}) is not int:",  # bool is not an Avro number either
        f"{ind}    raise Mismatch('long')",
        f"{ind}n = ({v} << 1) ^ ({v} >> 63)",
        *_uvarint("n", ind),
    ]


def _double(v: str, ind: str) -> list[str]:
    return [
        f"{ind}if type({v}) is not float:",  # fastavro also takes ints here: left to it
        f"{ind}    raise Mismatch('double')",
        f"{ind}out += pack_double({v})",
    ]


def _string(v: str, ind: str) -> list[str]:
    return [
        f"{ind}if type({v}) is not str:",
        f"{ind}    raise Mismatch('string')",
        f"{ind}data = {v}.encode()",
        f"{ind}n = len(data) << 1",
        *_length("n", ind),
        f"{ind}out += data",
    ]


def _bytes(v: str, ind: str) -> list[str]:
    return [
        f"{ind}if type({v}) is not bytes:",
        f"{ind}    raise Mismatch('bytes')",
        f"{ind}n = len({v}) << 1",
        *_length("n", ind),
        f"{ind}out += {v}",
    ]


_PRIMITIVES: dict[str, Callable[[str, str], list[str]]] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int,
    "long": _long,
    "double": _double,
    "string": _string,
    "bytes": _bytes,
}

_source_ids = itertools.count()


def compile_writer(
    schema: dict[str, Any],
    *,
    prefix: bytes = b"",
    fallback: Encode | None = None,
) -> Encode:
    """The schemaless Avro encoder of one record schema.

    :param prefix: bytes written before the record (the wire format's magic byte and schema
        id), so framing costs no extra copy.
    :param fallback: called with the record instead of raising when the compiled writer
        declines it (:class:`Mismatch`, ``KeyError`` …): one call per record, not two.
    :raises Unsupported: for maps, fixed, float, logical types and unions other than
        ``["null", X]`` (none of which our schemas use).
    """
    gen = _Generator()
    ind = "    " if fallback is None else "        "  # inside try: when there is a fallback
    body = gen.emit(schema, schema.get("namespace", ""), "record", ind)
    functions: list[str] = []
    while gen.pending:  # records referenced by name; generating one may reference more
        full = gen.pending.pop()
        functions += [f"def {gen.functions[full]}(value, out):"]
        functions += gen.record(full, "value", "    ")
    if fallback is not None:
        body = ["    try:", *body, "    except Exception:", "        return fallback(record)"]
    functions += [
        "def encode(record):",
        "    out = bytearray(prefix)",
        *body,
        "    return bytes(out)",
    ]
    # Everything the functions use is a parameter of make(), so a closure variable for them:
    # LOAD_DEREF is cheaper than the LOAD_GLOBAL a module-level name would cost, per field.
    names = {**gen.globals, "prefix": prefix, "fallback": fallback}
    source = "\n".join(
        [
            f"def make({', '.join(names)}):",
            *("    " + line for line in functions),
            "    return encode",
            "",
        ]
    )
    filename = f"<avro_writer {schema.get('name', 'schema')} #{next(_source_ids)}>"
    # registered with linecache so a traceback through the generated code shows its lines
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)  # the source generated above
    encode: Encode = namespace["make"](**names)
    return encode


def _full_name(node: dict[str, Any], namespace: str) -> str:
    name: str = node["name"]
    return name if "." in name else f"{node.get('namespace', namespace)}.{name}"

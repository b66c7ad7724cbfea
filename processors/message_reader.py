"""The fan-out's reader of ``stocktwits.messages``: framed Avro → :data:`MessageParts`.

The fan-out needs five fields of a MessageEvent of about fifty, and decoding the whole record
with fastavro was two thirds of its time. The native extension (``native/``, Rust,
``pulse_native.MessageReader``) reads just those fields from the Avro bytes, skipping the rest,
about 20 times faster. It is used for records written with the very schema this project
registers (the writer schema's canonical form equals ``message_event.avsc``'s); a record of
any other schema version, or every record when the extension is not installed, is decoded by
fastavro (with schema resolution) and reduced to the same parts. Bytes that are no record of
their schema raise ``ValueError`` on either path, and the fan-out dead-letters them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

import fastavro

from pulse.processors.mentions import MessageParts, message_parts
from pulse.schemas.serde import MAGIC_BYTE

native: ModuleType | None
try:
    import pulse_native as native
except ImportError:  # built without Rust: fastavro reads every record
    native = None

log = logging.getLogger(__name__)

Read = Callable[[bytes], MessageParts]
HEADER_BYTES = 5  # magic byte + schema id


def native_available() -> bool:
    return native is not None and hasattr(native, "MessageReader")


def canonical(schema: dict[str, Any]) -> str:
    return str(fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema)))


class MessageReader:
    """Framed MessageEvent bytes → :data:`MessageParts`, one reader per schema id.

    :param reader_schema: the schema this project reads messages with (``message_event.avsc``).
    :param writer_schema: schema id → the schema a record was written with (the registry);
        its errors propagate (the fan-out tells a registry outage from a bad record).
    :param decode: the fastavro wire decoder into ``reader_schema``.
    """

    def __init__(
        self,
        reader_schema: dict[str, Any],
        writer_schema: Callable[[int], dict[str, Any]],
        decode: Callable[[bytes], dict[str, Any]],
        use_native: bool = True,
    ) -> None:
        self._reader_form = canonical(reader_schema)
        self._writer_schema = writer_schema
        self._decode = decode
        self._native = use_native and native_available()
        self._by_header: dict[bytes, Read] = {}

    def __call__(self, frame: bytes) -> MessageParts:
        if not self._native:
            return self._slow(frame)
        read = self._by_header.get(frame[:HEADER_BYTES])
        if read is None:
            read = self._reader_for(frame)
        return read(frame)

    def _slow(self, frame: bytes) -> MessageParts:
        return message_parts(self._decode(frame))

    def _reader_for(self, frame: bytes) -> Read:
        if len(frame) < HEADER_BYTES or frame[0] != MAGIC_BYTE:
            raise ValueError(f"not a Confluent Avro frame ({len(frame)} bytes)")
        schema_id = int.from_bytes(frame[1:HEADER_BYTES], "big")
        read: Read = self._slow
        writer = self._writer_schema(schema_id)  # (unknown id: raises, nothing is cached)
        if canonical(writer) == self._reader_form:
            assert native is not None
            read = native.MessageReader(json.dumps(writer)).read
        else:
            log.info(
                "messages written with schema id %d (not the schema this version registers) "
                "are decoded by fastavro, not the native reader",
                schema_id,
            )
        self._by_header[frame[:HEADER_BYTES]] = read
        return read

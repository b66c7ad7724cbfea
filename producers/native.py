"""The optional native fast path (``native/``, Rust): a Firehose Message create to framed Avro.

``firehose_message(raw, header)`` takes one ``/stream`` event's JSON bytes and the 5-byte frame
header of the ``stocktwits.messages`` value schema and returns ``(message_id, seq_id, value)``
— the bytes ``Publisher.publish(parse.firehose_event(raw))`` would produce — or ``None`` for
anything it is not certain about (another object or action, an odd field, an unusual
timestamp …); the caller then takes the Python path, which decides as it always did.

``firehose_message`` is ``None`` when the extension is not installed (``make`` installs it from
``native/``; an image built without Rust lacks it): producers then use the Python path only.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

FirehoseMessage = Callable[[bytes, bytes], "tuple[int, str | None, bytes] | None"]

module: ModuleType | None
try:
    import pulse_native as module
except ImportError:  # built without Rust: the Python path does everything
    module = None

firehose_message: FirehoseMessage | None = None if module is None else module.firehose_message

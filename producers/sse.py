"""Incremental Server-Sent-Events decoder over raw bytes (pure; the socket lives in firehose.py).

Follows the SSE framing rules: ``field: value`` lines, several ``data:`` lines joined with
``\\n``, an event dispatched on a blank line, ``:`` comments ignored, blank lines with no pending
data are keep-alives. Lines end with ``\\n`` (a trailing ``\\r`` is dropped). Data stays bytes so
invalid UTF-8 reaches the dead-letter topic byte for byte. Tolerance: a line starting with ``{``
is taken as a whole JSON event, for captures that are JSON lines rather than SSE.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_EVENT_BYTES = 1 << 20


class SseEvent(NamedTuple):
    data: bytes
    event: str | None = None
    id: str | None = None
    truncated: bool = False  # over the size limit: ``data`` holds only its first bytes


class SseDecoder:
    """Feed it chunks as they arrive; it returns the events each chunk completes."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self.keepalives = 0
        self._buf = bytearray()
        self._data: list[bytes] = []
        self._size = 0
        self._event: str | None = None
        self._id: str | None = None
        self._oversized: bytes | None = None  # prefix of an event being discarded
        self._discarding_line = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buf += chunk
        out: list[SseEvent] = []
        start = 0
        while (end := self._buf.find(b"\n", start)) >= 0:
            self._line(bytes(self._buf[start:end]).removesuffix(b"\r"), out)
            start = end + 1
        del self._buf[:start]
        if len(self._buf) > self.max_event_bytes:  # a line that never ends: keep only a prefix
            if self._oversized is None:
                self._oversized = bytes(self._buf[: self.max_event_bytes])
            self._buf.clear()
            self._discarding_line = True
        return out

    def _line(self, line: bytes, out: list[SseEvent]) -> None:
        if self._discarding_line:  # the tail of an over-long line; dispatched at the blank line
            self._discarding_line = False
            return
        if not line:
            if self._data or self._oversized is not None:
                self._dispatch(out)
            else:
                self.keepalives += 1
            return
        if line.startswith(b":"):
            return
        if line.startswith(b"{"):
            self._dispatch(out)  # flush anything pending, then the JSON line on its own
            self._append(line)
            self._dispatch(out)
            return
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"data":
            self._append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            self._id = value.decode("utf-8", "replace")
        # `retry` and unknown fields: ignored

    def _append(self, value: bytes) -> None:
        if self._oversized is not None:
            return
        self._size += len(value) + 1
        if self._size > self.max_event_bytes:
            self._oversized = b"\n".join([*self._data, value])[: self.max_event_bytes]
            self._data = []
        else:
            self._data.append(value)

    def _dispatch(self, out: list[SseEvent]) -> None:
        if self._oversized is not None:
            out.append(SseEvent(self._oversized, self._event, self._id, truncated=True))
        elif self._data:
            out.append(SseEvent(b"\n".join(self._data), self._event, self._id))
        self._data, self._size, self._event, self._oversized = [], 0, None, None

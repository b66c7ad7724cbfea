"""HTTP response bodies read with a byte cap before and after decompression.

``resp.read()`` holds a whole body, and aiohttp's own decompression expands it before any
size check: a 255 KB gzip body became 256 MiB. Here the body is requested without
aiohttp's decompression (``auto_decompress=False``) and streamed: the bytes received and the
bytes they inflate to are each counted against the limit, and reading stops at the first
byte over it, so memory stays within about one limit plus one chunk whatever upstream sends.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import aiohttp

from pulse.producers.parse import MAX_PAYLOAD_BYTES, ParseError
from pulse.schemas.deadletter import Reason

CHUNK_BYTES = 64 * 1024
# what we can inflate; asking for exactly these keeps brotli or zstd bodies away
ACCEPT_ENCODING = "gzip, deflate"
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyTooLarge(ParseError):
    """A body over the limit, received or inflated; ``prefix`` holds its first bytes."""

    def __init__(self, message: str, prefix: bytes) -> None:
        super().__init__(Reason.TOO_LARGE, message)
        self.prefix = prefix


def inflater(content_encoding: str | None) -> Callable[[bytes, int], bytes] | None:
    """``(chunk, max_out) -> bytes`` for the response's ``Content-Encoding``; None: identity.

    Raises :class:`ParseError` for an encoding we did not offer and cannot read.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in _WBITS:
        raise ParseError(Reason.INVALID_JSON, f"unsupported Content-Encoding {encoding!r}")
    obj = zlib.decompressobj(_WBITS[encoding])

    def inflate(chunk: bytes, max_out: int) -> bytes:
        try:
            # max_length bounds what one call may produce: a bomb never expands past it
            return obj.decompress(obj.unconsumed_tail + chunk, max(1, max_out))
        except zlib.error as exc:
            raise ParseError(Reason.INVALID_JSON, f"corrupt {encoding} body: {exc}") from exc

    return inflate


class BoundedBody:
    """Accumulates one body chunk by chunk; raises :class:`BodyTooLarge` past ``limit``.

    Pure (no socket): :func:`read_body` feeds it, tests feed it directly.
    """

    def __init__(self, limit: int, content_encoding: str | None = None) -> None:
        self.limit = limit
        self.received = 0
        self._inflate = inflater(content_encoding)
        self._out = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            self._over(f"over {self.limit} bytes received")
        if self._inflate is None:
            self._out += chunk
        else:
            # ask for one byte more than the room left: getting it proves the body too big
            self._out += self._inflate(chunk, self.limit - len(self._out) + 1)
        if len(self._out) > self.limit:
            self._over(f"over {self.limit} bytes after decompression")

    def _over(self, why: str) -> None:
        prefix = bytes(self._out[:4096])
        self._out.clear()
        raise BodyTooLarge(f"response body {why}", prefix)

    def value(self) -> bytes:
        return bytes(self._out)


async def read_body(
    resp: aiohttp.ClientResponse,
    limit: int = MAX_PAYLOAD_BYTES,
    *,
    truncate: bool = False,
    inflated: bool = False,
) -> bytes:
    """The body of ``resp`` (requested with ``auto_decompress=False``), at most ``limit`` bytes.

    :param truncate: return the first bytes and stop reading instead of raising (error pages,
        read only for a message).
    :param inflated: aiohttp already decompressed it (a session with ``auto_decompress``).
    """
    length = resp.content_length
    if not truncate and length is not None and length > limit:
        raise BodyTooLarge(f"Content-Length {length} is over {limit} bytes", b"")
    body = BoundedBody(limit, None if inflated else resp.headers.get("Content-Encoding"))
    try:
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            body.feed(chunk)
    except BodyTooLarge as exc:
        if not truncate:
            raise
        return exc.prefix[:limit]
    except ParseError:
        if not truncate:
            raise
    return body.value()

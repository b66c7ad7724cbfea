"""The body cap before and after decompression, fed chunk by chunk (no socket)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from pulse.producers.httpbody import BodyTooLarge, BoundedBody, inflater
from pulse.producers.parse import ParseError


def chunks(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("encoding", [None, "identity", "gzip", "x-gzip", "deflate"])
def test_a_body_within_the_limit_comes_back_whole(encoding: str | None) -> None:
    plain = b'{"data": [' + b'{"symbol": "AAPL"},' * 500 + b"]}"
    wire = {"gzip": gzip.compress, "x-gzip": gzip.compress, "deflate": zlib.compress}.get(
        encoding or "", lambda b: b
    )(plain)
    body = BoundedBody(len(plain), encoding)
    for c in chunks(wire):
        body.feed(c)
    assert body.value() == plain


def test_a_gzip_bomb_stops_at_the_limit_after_decompression() -> None:
    bomb = gzip.compress(b"0" * (64 << 20), 9)  # 64 MiB in about 64 KB
    body = BoundedBody(1 << 20, "gzip")
    with pytest.raises(BodyTooLarge, match="after decompression") as err:
        for c in chunks(bomb, 4096):
            body.feed(c)
    assert err.value.reason.value == "too_large" and err.value.prefix == b"0" * 4096
    assert body.received < len(bomb)  # stopped early, not after inflating it all


def test_received_bytes_count_before_decompression() -> None:
    body = BoundedBody(10_000)
    body.feed(b"x" * 10_000)
    with pytest.raises(BodyTooLarge, match="received"):
        body.feed(b"x")


def test_one_byte_over_is_over_and_exactly_the_limit_is_not() -> None:
    data = gzip.compress(b"a" * 4096)
    exact, over = BoundedBody(4096, "gzip"), BoundedBody(4095, "gzip")
    exact.feed(data)
    assert len(exact.value()) == 4096
    with pytest.raises(BodyTooLarge):
        over.feed(data)


def test_unknown_or_corrupt_encodings_are_parse_errors() -> None:
    with pytest.raises(ParseError, match="unsupported"):
        inflater("br")
    with pytest.raises(ParseError, match="corrupt"):
        BoundedBody(100, "gzip").feed(b"not gzip at all")

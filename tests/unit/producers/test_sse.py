"""producers.sse: SSE framing, chunk boundaries, keep-alives, oversized events."""

from __future__ import annotations

import pytest

from pulse.producers.sse import SseDecoder, SseEvent


def feed_all(chunks: list[bytes], **kw: int) -> tuple[list[SseEvent], SseDecoder]:
    dec = SseDecoder(**kw)
    out = [ev for chunk in chunks for ev in dec.feed(chunk)]
    return out, dec


@pytest.mark.parametrize(
    "stream, datas",
    [
        (b"data: {}\n\n", [b"{}"]),
        (b"data:{}\r\n\r\n", [b"{}"]),
        (b'data: {"a":\ndata:  1}\n\n', [b'{"a":\n 1}']),  # multi-line data joined with \n
        (b": comment\n\ndata: x\n\n\n\n", [b"x"]),
        (b"event: msg\nid: 7\nretry: 5\ndata: y\n\n", [b"y"]),
        (b"data: a\n\ndata: b\n\n", [b"a", b"b"]),
        (b'{"seq_id": "1"}\n\n{"seq_id": "2"}\n', [b'{"seq_id": "1"}', b'{"seq_id": "2"}']),
        (b"data: \xff\xfe\n\n", [b"\xff\xfe"]),  # bytes stay bytes
        (b"data: unterminated", []),
    ],
)
@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_framing_independent_of_chunking(stream: bytes, datas: list[bytes], chunk: int) -> None:
    events, _ = feed_all([stream[i : i + chunk] for i in range(0, len(stream), chunk)])
    assert [e.data for e in events] == datas


def test_fields_and_keepalives() -> None:
    events, dec = feed_all([b"\n\n\nevent: msg\nid: 7\ndata: y\n\n\n"])
    assert events == [SseEvent(b"y", "msg", "7")]
    assert dec.keepalives == 4


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
def test_oversized_event_truncated_then_stream_continues(chunk: int) -> None:
    stream = b"data: " + b"x" * 5000 + b"\n\ndata: ok\n\n"
    events, _ = feed_all(
        [stream[i : i + chunk] for i in range(0, len(stream), chunk)], max_event_bytes=100
    )
    assert [e.truncated for e in events] == [True, False]
    assert len(events[0].data) <= 100 and events[1].data == b"ok"


def test_oversized_multi_line_event() -> None:
    events, _ = feed_all(
        [b"data: " + b"a" * 60 + b"\ndata: " + b"b" * 60 + b"\n\ndata: z\n\n"], max_event_bytes=100
    )
    assert [(e.truncated, e.data[:1]) for e in events] == [(True, b"a"), (False, b"z")]

"""A local aiohttp server that speaks the Stocktwits protocols of ../shared/seeds, with faults.

- Firehose ``/stream`` and ``/sentiment``: SSE over chunked gzip (406 without
  ``Accept-Encoding: gzip``), basic auth (401), ``?seq_id=`` resume (events after it),
  keep-alive blank lines, ``fail_503`` refusals, connections cut mid-frame every
  ``drop_every`` events (``drops`` times), multi-line ``data:`` frames.
- Trending symbols ``/trending``: ``X-API-Key``, ``page``/``limit``/``class``/``region``,
  ``has_more``, 429 with rate-limit headers ``trending_429`` times.
- Sentiment chart ``/chart/{symbol}/chart?zoom=``: basic auth, 503 ``chart_503`` times.
- REST v2 ``/api/2/streams/{name}.json`` and ``/api/2/streams/symbol/{symbol}.json``:
  each GET serves the next queued response (or the last one again), filtered by ``since`` /
  ``max``; ``X-RateLimit-*`` headers; 429 ``rest_429`` times; optional bearer token.
- Hostile bodies for the three polled endpoints (``hostile``): a gzip bomb, or a 200 whose
  body never ends.

Every request is recorded in ``requests`` for assertions. Run it for demos:
``python -m tests.support.stocktwits_server --port 8999 --events 100000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int = 0


def envelope(seq: int, obj: str, data: dict[str, Any], action: str = "create") -> bytes:
    """A Firehose event line whose seq_id is ``seq`` (as the 56-digit-style decimal string)."""
    time_ = data.get("created_at", "2022-06-29T16:56:05Z")
    return json.dumps(
        {"object": obj, "action": action, "data": data, "time": time_, "seq_id": str(seq)}
    ).encode()


def message(message_id: int, symbols: Iterable[str] = ("AAPL",), **extra: Any) -> dict[str, Any]:
    return {
        "id": message_id,
        "body": " ".join(f"${s}" for s in symbols) + f" message {message_id}",
        "created_at": extra.pop("created_at", "2022-06-29T16:56:05Z"),
        "user": {"id": 1000 + message_id % 97, "username": f"user{message_id % 97}"},
        "symbols": [{"id": i, "symbol": s} for i, s in enumerate(symbols)],
        "entities": {"sentiment": {"basic": "Bullish"} if message_id % 3 == 0 else None},
        **extra,
    }


def message_events(n: int, first_seq: int = 10**20, first_id: int = 1) -> list[tuple[int, bytes]]:
    """``n`` Firehose Message creates with growing seq_ids and ids."""
    return [
        (first_seq + i, envelope(first_seq + i, "Message", message(first_id + i))) for i in range(n)
    ]


BOMB_INFLATED_BYTES = 256 << 20


@functools.cache
def gzip_bomb() -> bytes:
    """A gzip body of about 255 KB that inflates to 256 MiB of ``0`` bytes (built in 1 MiB
    steps: the 256 MiB never exist on this side)."""
    gz = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"0" * (1 << 20)
    parts = [gz.compress(block) for _ in range(BOMB_INFLATED_BYTES >> 20)]
    return b"".join(parts) + gz.flush()


@dataclass
class FakeStocktwits:
    """State and faults of the fake upstream; mutate the fields between connections."""

    username: str = "user"
    password: str = "secret"
    api_key: str = "key"
    bearer: str | None = None
    # Firehose: (seq, payload) pairs; payload is the exact bytes after `data: `
    events: list[tuple[int, bytes]] = field(default_factory=list)
    sentiment_events: list[tuple[int, bytes]] = field(default_factory=list)
    fail_503: int = 0
    require_encoding: str = "gzip"  # what Accept-Encoding must offer, else 406
    drop_every: int | None = None
    drops: int = 0
    keepalive_every: int = 50  # events between keep-alive blank lines
    multiline_every: int = 0  # every Nth event is sent as several data: lines
    close_at_end: bool = False  # else hold the connection open with keep-alives
    chunk_delay_s: float = 0.0
    # trending: page number → response body (dict)
    trending_pages: dict[int, dict[str, Any]] = field(default_factory=dict)
    trending_429: int = 0
    # chart: symbol → response body
    charts: dict[str, dict[str, Any]] = field(default_factory=dict)
    chart_503: int = 0
    # REST: stream path (e.g. "symbol/ETH.X", "trending") → queued responses
    rest: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rest_429: int = 0
    rest_remaining: int = 1_000_000  # requests left this hour (upstream: 200 or 400)
    # hostile bodies: endpoint ("trending", "chart", "rest") → queued modes, one per request:
    # "bomb" (a 255 KB gzip body that inflates to 256 MiB), "endless" (a 200 that never ends)
    hostile: dict[str, list[str]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    connections: int = 0

    # --- plumbing ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stream", self._firehose)
        app.router.add_get("/sentiment", self._firehose)
        app.router.add_get("/trending", self._trending)
        app.router.add_get("/chart/{symbol}/chart", self._chart)
        app.router.add_get("/api/2/streams/{path:.+}.json", self._rest)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in the running loop; returns the base URL."""
        self._runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        await self._runner.cleanup()

    def _record(self, request: web.Request, status: int) -> None:
        self.requests.append(
            Recorded(request.path, dict(request.query), dict(request.headers), status)
        )

    def _basic_ok(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _refuse(self, request: web.Request, status: int, text: str, **headers: str) -> web.Response:
        self._record(request, status)
        return web.Response(status=status, text=text, headers=headers)

    # --- Firehose ---------------------------------------------------------------------------

    async def _firehose(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        if not self._basic_ok(request):
            return self._refuse(request, 401, "Unauthorized")
        if self.require_encoding not in request.headers.get("Accept-Encoding", ""):
            return self._refuse(
                request,
                406,
                json.dumps(
                    "This connection requires compression. To enable compression, send an "
                    "'Accept-Encoding: gzip' header in your request and be ready to uncompress "
                    "the stream as it is read on the client end."
                ),
            )
        if self.fail_503 > 0:
            self.fail_503 -= 1
            return self._refuse(request, 503, "Service Unavailable")
        self._record(request, 200)
        events = self.events if request.path == "/stream" else self.sentiment_events
        after = request.query.get("seq_id")
        start = 0
        if after is not None:
            start = next((i for i, (s, _) in enumerate(events) if s > int(after)), len(events))
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        gz = zlib.compressobj(wbits=31)

        async def send(data: bytes) -> None:
            # sync-flush each write so the client sees events now, like a live stream
            await resp.write(gz.compress(data) + gz.flush(zlib.Z_SYNC_FLUSH))

        sent = 0
        for seq, payload in events[start:]:
            frame = self._frame(payload, seq)
            sent += 1
            if self.drop_every and self.drops > 0 and sent % self.drop_every == 0:
                self.drops -= 1
                await send(frame[: max(1, len(frame) // 2)])  # half a frame, then cut
                await asyncio.sleep(0.01)
                assert request.transport is not None
                request.transport.abort()
                return resp
            await send(frame)
            if self.keepalive_every and sent % self.keepalive_every == 0:
                await send(b"\n")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        if self.close_at_end:
            await resp.write(gz.flush())
            await resp.write_eof()
            return resp
        try:
            while True:  # hold open with keep-alives until the client leaves
                await asyncio.sleep(0.2)
                await send(b"\n")
        except ConnectionResetError:
            return resp

    def _frame(self, payload: bytes, seq: int) -> bytes:
        if self.multiline_every and seq % self.multiline_every == 0 and payload.startswith(b"{"):
            lines = json.dumps(json.loads(payload), indent=1).encode().split(b"\n")
            return b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
        return b"data: " + payload + b"\n\n"

    # --- hostile bodies ---------------------------------------------------------------------

    async def _hostile(self, endpoint: str, request: web.Request) -> web.StreamResponse | None:
        modes = self.hostile.get(endpoint)
        if not modes:
            return None
        mode = modes.pop(0)
        self._record(request, 200)
        if mode == "bomb":
            return web.Response(
                body=gzip_bomb(),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        if mode != "endless":
            raise ValueError(f"unknown hostile mode {mode!r}")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b'{"data": {"trending_symbols": [' + b'{"symbol": "AAPL"},' * 4000
        try:
            while True:  # until the client hangs up
                await resp.write(chunk)
                await asyncio.sleep(0)
        except (ConnectionResetError, ConnectionError):
            return resp

    # --- trending ---------------------------------------------------------------------------

    async def _trending(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") != self.api_key:
            return self._refuse(request, 401, '{"error": "invalid API key"}')
        if self.trending_429 > 0:
            self.trending_429 -= 1
            return self._refuse(request, 429, '{"error": "rate limited"}', **{"Retry-After": "1"})
        if hostile := await self._hostile("trending", request):
            return hostile
        self._record(request, 200)
        page = int(request.query.get("page", "1"))
        body = self.trending_pages.get(
            page, {"data": {"page": page, "has_more": False, "trending_symbols": []}}
        )
        return web.json_response(body)

    # --- chart ------------------------------------------------------------------------------

    async def _chart(self, request: web.Request) -> web.Response:
        if not self._basic_ok(request):
            return self._refuse(request, 401, "Unauthorized")
        if self.chart_503 > 0:
            self.chart_503 -= 1
            return self._refuse(request, 503, "Service Unavailable")
        if hostile := await self._hostile("chart", request):
            return hostile
        self._record(request, 200)
        return web.json_response(self.charts.get(request.match_info["symbol"], {"data": {}}))

    # --- REST v2 ----------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        now = int(time.time())
        limits = {"X-RateLimit-Limit": "200", "X-RateLimit-Reset": str(now + 3600)}
        if (
            self.bearer is not None
            and request.headers.get("Authorization") != f"Bearer {self.bearer}"
        ):
            return self._refuse(request, 401, '{"errors": [{"message": "unauthorized"}]}')
        if self.rest_429 > 0:
            self.rest_429 -= 1
            return self._refuse(
                request,
                429,
                '{"errors": [{"message": "Rate limit exceeded. Client may not make more than '
                'N requests an hour."}]}',
                **{**limits, "X-RateLimit-Remaining": "0", "Retry-After": "1"},
            )
        if hostile := await self._hostile("rest", request):
            return hostile
        path = request.match_info["path"]
        queue = self.rest.get(path)
        if queue is None:
            return self._refuse(request, 404, '{"errors": [{"message": "not found"}]}')
        self._record(request, 200)
        body = queue.pop(0) if len(queue) > 1 else queue[0]
        msgs = body.get("messages", [])
        if "since" in request.query:
            msgs = [m for m in msgs if m["id"] > int(request.query["since"])]
        if "max" in request.query:
            msgs = [m for m in msgs if m["id"] <= int(request.query["max"])]
        more = len(msgs) > 30  # upstream pages hold at most 30 messages, newest first
        msgs = sorted(msgs, key=lambda m: -m["id"])[:30]
        ids = [m["id"] for m in msgs]
        cursor = {"more": more, "since": max(ids, default=None), "max": min(ids, default=None)}
        self.rest_remaining = max(0, self.rest_remaining - 1)
        headers = {**limits, "X-RateLimit-Remaining": str(self.rest_remaining)}
        return web.json_response({**body, "messages": msgs, "cursor": cursor}, headers=headers)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeStocktwits(events=message_events(args.events), chunk_delay_s=args.delay)
    url = await fake.start(port=args.port)
    print(f"fake Stocktwits on {url} (user/secret, X-API-Key: key); Ctrl-C stops")
    print(
        f"export PULSE_FIREHOSE_URL={url} PULSE_FIREHOSE_USERNAME=user "
        "PULSE_FIREHOSE_PASSWORD=secret"
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--delay", type=float, default=0.001, help="seconds between events")
    try:
        asyncio.run(_serve(parser.parse_args()))
    except KeyboardInterrupt:
        pass

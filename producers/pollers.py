"""HTTP pollers: trending symbols, sentiment chart v2, REST API v2 streams → Kafka.

Each poller does one round in ``poll_once()`` (tests call it directly) and ``run()`` repeats it
on an interval until stopped. Shared rules: 401 stops with a clear error, 429 waits for the
rate-limit reset (``Retry-After`` / ``X-RateLimit-Reset``, else backoff), 5xx and network errors
retry with jittered backoff, malformed bodies or items go to the dead-letter topic.
What was already written is read back from Kafka at start, so a restart does not duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import confluent_kafka as ck

from pulse.backoff import Backoff, retry_after_s, throttle_s
from pulse.lifecycle import stop_on_signals
from pulse.producers import metrics, parse
from pulse.producers.httpbody import ACCEPT_ENCODING, BodyTooLarge, read_body
from pulse.producers.parse import MAX_PAYLOAD_BYTES, ParseError, Rejected
from pulse.producers.publish import (
    Publisher,
    now_ms,
    offsets_at,
    partitions,
    read_consumer,
    read_to_end,
)
from pulse.producers.upstream import FatalUpstreamError, userinfo_error
from pulse.schemas.topics import DEAD_LETTER, MESSAGES, SENTIMENT_CHART, TRENDING, TopicSpec
from pulse.settings import Settings, redact_url

log = logging.getLogger(__name__)
ERROR_BODY_BYTES = 4096  # of a non-200 answer: enough for its message


class Http:
    """GET with the pollers' retry rules; returns the body of the first 200."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        source: str,
        stop: asyncio.Event,
        *,
        backoff: Backoff | None = None,
        max_attempts: int = 8,
        max_body_bytes: int = MAX_PAYLOAD_BYTES,
        reject: Callable[[bytes, ParseError], None] | None = None,
    ) -> None:
        """:param reject: where a body over ``max_body_bytes`` goes (the dead-letter topic)."""
        self.session, self.source, self.stop = session, source, stop
        self.backoff = backoff or Backoff(base_s=1.0, cap_s=300.0)
        self.max_attempts = max_attempts
        self.max_body_bytes = max_body_bytes
        self.reject = reject
        self.last_headers: dict[str, str] = {}
        self.requests = self.rate_limited = self.too_large = 0

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if stopped."""
        try:
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))
            return True
        except TimeoutError:
            return False

    async def get(
        self, url: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> bytes | None:
        """The body of a 200, or None after ``max_attempts`` failures (or when stopped).

        A 200 whose body is over ``max_body_bytes`` (received or inflated) goes to ``reject``
        and gives None at once: asking again would fetch the same body.
        """
        for _ in range(self.max_attempts):
            if self.stop.is_set():
                return None
            self.requests += 1
            try:
                status, body = await self._fetch(url, params, headers)
            except BodyTooLarge as exc:
                self._too_large(url, exc)
                return None
            except (aiohttp.ClientError, TimeoutError, ParseError) as exc:
                status, body, cause = 0, b"", type(exc).__name__
            else:
                cause = f"HTTP {status}"
            if status == 200:
                self.backoff.reset()
                metrics.BYTES.labels(self.source).inc(len(body))
                return body
            if status == 401:
                raise FatalUpstreamError(
                    f"{self.source}: 401 Unauthorized from {redact_url(url)}: "
                    f"{body[:200].decode(errors='replace')!r}"
                )
            metrics.RECONNECTS.labels(self.source, cause).inc()
            wait = None
            if status == 429:
                self.rate_limited += 1
                wait = retry_after_s(self.last_headers, time.time())
            if wait is None:
                wait = self.backoff.next()
            log.warning(
                "%s: %s from %s; retrying in %.1fs", self.source, cause, redact_url(url), wait
            )
            if await self.sleep(wait):
                return None
        log.error("%s: giving up on %s for this round", self.source, redact_url(url))
        return None

    async def _fetch(
        self, url: str, params: dict[str, str] | None, headers: dict[str, str] | None
    ) -> tuple[int, bytes]:
        """One GET: status and body, the body capped before and after decompression."""
        headers = {"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})}
        async with self.session.get(
            url, params=params, headers=headers, auto_decompress=False
        ) as resp:
            self.last_headers = dict(resp.headers)
            if resp.status != 200:  # an error page is read only for its first bytes
                return resp.status, await read_body(resp, ERROR_BODY_BYTES, truncate=True)
            return resp.status, await read_body(resp, self.max_body_bytes)

    def _too_large(self, url: str, exc: BodyTooLarge) -> None:
        self.too_large += 1
        metrics.RECONNECTS.labels(self.source, "body too large").inc()
        log.error("%s: %s from %s; skipped this round", self.source, exc, redact_url(url))
        if self.reject is not None:
            self.reject(exc.prefix, exc)


def _reject_all(publisher: Publisher, rejected: list[Rejected]) -> None:
    for r in rejected:
        publisher.reject(r.raw, r.error)


async def _run_every(
    interval_s: float, stop: asyncio.Event, once: Callable[[], Awaitable[Any]]
) -> None:
    while not stop.is_set():
        started = time.monotonic()
        await once()
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, interval_s - (time.monotonic() - started)))
        except TimeoutError:
            pass


# --- trending ---------------------------------------------------------------------------------


class TrendingPoller:
    """Snapshots of the trending-symbols list, every page, one record per symbol."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        http: Http,
        *,
        asset_class: str = "all",
        region: str | None = None,
        limit: int = 30,
        max_pages: int = 20,
    ) -> None:
        self.settings, self.publisher, self.http = settings, publisher, http
        self.asset_class, self.region = asset_class, region
        self.limit = max(1, min(30, limit))  # upstream maximum
        self.max_pages = max_pages
        self.snapshots = 0

    async def poll_once(self) -> int:
        """One snapshot, following ``has_more``; returns the number of rows written."""
        snapshot_ms = now_ms()
        written = 0
        for page in range(1, self.max_pages + 1):
            params = {"page": str(page), "limit": str(self.limit), "class": self.asset_class}
            if self.region:
                params["region"] = self.region
            body = await self.http.get(
                self.settings.trending_url, params, {"X-API-Key": self.settings.trending_api_key}
            )
            if body is None:
                break
            try:
                result = parse.trending_page(
                    body, snapshot_ms=snapshot_ms, asset_class=self.asset_class, region=self.region
                )
            except ParseError as exc:
                self.publisher.reject(body, exc)
                break
            for item in result.items:
                self.publisher.publish(item)
            _reject_all(self.publisher, result.rejected)
            written += len(result.items)
            if not result.has_more:
                break
        self.snapshots += 1
        self.publisher.poll(0)
        return written


# --- sentiment chart ----------------------------------------------------------------------


def written_keys(settings: Settings, spec: TopicSpec, since_ms: int | None = None) -> list[bytes]:
    """Keys of ``spec``'s records (all, or those written since ``since_ms``), read from Kafka."""
    consumer = read_consumer(settings)
    try:
        name = spec.full_name(settings)
        parts = partitions(consumer, name)
        if since_ms is None:
            start = [ck.TopicPartition(name, p, ck.OFFSET_BEGINNING) for p in parts]
        else:
            wanted = [ck.TopicPartition(name, p, since_ms) for p in parts]
            start = offsets_at(consumer, wanted)
        return [key for m in read_to_end(consumer, start) if (key := m.key()) is not None]
    finally:
        consumer.close()


class ChartPoller:
    """Sentiment-chart points per symbol and zoom; writes only points newer than written ones."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        http: Http,
        symbols: list[str],
        zoom: str,
        *,
        latest: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.settings, self.publisher, self.http = settings, publisher, http
        self.symbols, self.zoom = symbols, zoom
        self.latest = latest or {}  # (symbol, zoom) -> newest time_ms written

    @staticmethod
    def latest_from_keys(keys: list[bytes]) -> dict[tuple[str, str], int]:
        """Newest point per (symbol, zoom) from topic keys ``symbol|zoom|time_ms``."""
        latest: dict[tuple[str, str], int] = {}
        for key in keys:
            symbol, _, rest = key.decode(errors="replace").partition("|")
            zoom, _, when = rest.partition("|")
            if when.isdigit():
                latest[(symbol, zoom)] = max(latest.get((symbol, zoom), 0), int(when))
        return latest

    async def poll_once(self) -> int:
        written = 0
        auth = aiohttp.encode_basic_auth(
            self.settings.firehose_username, self.settings.firehose_password
        )
        headers = {"Accept": "application/json", "Authorization": auth}
        for symbol in self.symbols:
            url = f"{self.settings.chart_url.rstrip('/')}/{symbol}/chart"
            body = await self.http.get(url, {"zoom": self.zoom}, headers)
            if body is None:
                continue
            try:
                page = parse.chart_points(
                    body, symbol=symbol, zoom=self.zoom, fetched_at_ms=now_ms()
                )
            except ParseError as exc:
                self.publisher.reject(body, exc)
                continue
            newest = self.latest.get((symbol, self.zoom), -1)
            for item in page.items:
                if item.record["time_ms"] > newest:
                    self.publisher.publish(item)
                    self.latest[(symbol, self.zoom)] = item.record["time_ms"]
                    written += 1
            _reject_all(self.publisher, page.rejected)
        self.publisher.poll(0)
        return written


# --- REST API v2 streams --------------------------------------------------------------------


class SeenIds:
    """Bounded memory of message ids already written (oldest forgotten first)."""

    def __init__(self, capacity: int = 500_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, message_id: int) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, message_id: int) -> None:
        self._ids[message_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


def stream_path(spec: str) -> str:
    """``trending`` → ``trending``; ``symbol:AAPL`` → ``symbol/AAPL`` (REST v2 paths)."""
    kind, _, arg = spec.strip().partition(":")
    return f"{kind}/{arg}" if arg else kind


class RestPoller:
    """REST v2 streams with a ``since`` cursor each; ids already written are never re-sent."""

    PAGE = 30

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        http: Http,
        streams: list[str],
        *,
        seen: SeenIds | None = None,
        min_interval_s: float = 18.0,
        max_pages: int = 10,
    ) -> None:
        self.settings, self.publisher, self.http = settings, publisher, http
        self.streams = [stream_path(s) for s in streams if s.strip()]
        self.seen = seen or SeenIds()
        self.since: dict[str, int] = {}
        self.min_interval_s = min_interval_s
        self.max_pages = max_pages
        self.duplicates = 0

    def _headers(self) -> dict[str, str]:
        if self.settings.rest_token:
            return {"Authorization": f"Bearer {self.settings.rest_token}"}
        return {}

    async def poll_stream(self, path: str) -> int:
        """New messages of one stream: the newest page, then older pages back to ``since``."""
        url = f"{self.settings.rest_url.rstrip('/')}/streams/{path}.json"
        since = self.since.get(path)
        fresh: list[parse.Parsed] = []
        max_id: int | None = None
        for _ in range(self.max_pages):
            params: dict[str, str] = {}
            if since is not None:
                params["since"] = str(since)
            if max_id is not None:
                params["max"] = str(max_id)
            body = await self.http.get(url, params, self._headers())
            if body is None:
                break
            try:
                page = parse.rest_stream(body)
            except ParseError as exc:
                self.publisher.reject(body, exc)
                break
            _reject_all(self.publisher, page.rejected)
            fresh += page.items
            ids = [p.record["message_id"] for p in page.items]
            # a full page after a known cursor may hide older new messages: page backwards
            if since is None or len(ids) < self.PAGE or not page.cursor.more or not ids:
                break
            max_id = min(ids) - 1
            await self.http.sleep(self.pause_s())
        written = 0
        for item in sorted(fresh, key=lambda p: p.record["message_id"]):  # oldest first
            message_id = item.record["message_id"]
            self.since[path] = max(self.since.get(path, 0), message_id)
            if message_id in self.seen:
                self.duplicates += 1
                metrics.DUPLICATES.labels("rest").inc()
                continue
            self.seen.add(message_id)
            self.publisher.publish(item)
            written += 1
        self.publisher.poll(0)
        return written

    def pause_s(self) -> float:
        return throttle_s(self.http.last_headers, time.time(), self.min_interval_s)

    async def poll_once(self) -> int:
        written = 0
        for path in self.streams:
            written += await self.poll_stream(path)
            if await self.http.sleep(self.pause_s()):
                break
        return written


# --- entry points ---------------------------------------------------------------------------


class _Poller(Protocol):
    async def poll_once(self) -> Any: ...


def _serve(
    settings: Settings,
    source: str,
    metrics_port: int | None,
    make_poller: Callable[[Publisher, Http], Awaitable[_Poller]],
    interval_s: float | None,
) -> int:
    """Topics, publisher, HTTP session, metrics, signals, flush: the frame every poller shares.

    :param make_poller: the poller, once the session is open.
    :param interval_s: between the starts of two rounds; None: one round, then return.
    """
    from pulse.schemas.admin import ensure_topics

    ensure_topics(settings, (TRENDING, SENTIMENT_CHART, MESSAGES, DEAD_LETTER))
    publisher = Publisher(settings, source)
    state: dict[str, Any] = {"fatal": None, "last_round": time.monotonic()}

    def health() -> dict[str, Any]:
        return {
            "healthy": state["fatal"] is None,
            "source": source,
            "fatal": state["fatal"],
            **publisher.stats(),
        }

    port = settings.metrics_port if metrics_port is None else metrics_port
    server = metrics.serve(settings, port, health)

    async def go() -> None:
        stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=60, sock_read=45)
        with stop_on_signals(stop.set, loop=asyncio.get_running_loop()):
            async with aiohttp.ClientSession(timeout=timeout) as session:
                http = Http(session, source, stop, reject=publisher.reject)
                poller = await make_poller(publisher, http)
                if interval_s is None:
                    await poller.poll_once()
                else:
                    await _run_every(interval_s, stop, poller.poll_once)

    try:
        asyncio.run(go())
    except FatalUpstreamError as exc:
        state["fatal"] = str(exc)
        print(f"pulse produce {source}: {exc}", file=sys.stderr)
        return 2
    finally:
        publisher.flush(60)
        if server is not None:
            server.stop()
    return 0 if publisher.failed == 0 else 1


def run_trending(
    settings: Settings,
    *,
    asset_class: str = "all",
    region: str | None = None,
    limit: int = 30,
    interval_s: float | None = None,
    once: bool = False,
    metrics_port: int | None = None,
) -> int:
    """``pulse produce trending``: trending-symbols snapshots → stocktwits.trending.

    :param interval_s: between rounds (None: ``PULSE_TRENDING_INTERVAL_S``).
    :param once: one round, then return.
    :param metrics_port: None: ``PULSE_METRICS_PORT``; -1: none.
    """

    async def poller(publisher: Publisher, http: Http) -> TrendingPoller:
        return TrendingPoller(
            settings, publisher, http, asset_class=asset_class, region=region, limit=limit
        )

    every = None if once else interval_s or settings.trending_interval_s
    return _serve(settings, "trending", metrics_port, poller, every)


def _refused(kind: str, problem: str) -> int:
    """A configuration this poller cannot start with: one line, exit 2."""
    print(f"pulse produce {kind}: {problem}", file=sys.stderr)
    return 2


def run_chart(
    settings: Settings,
    *,
    symbols: str | None = None,
    zoom: str | None = None,
    interval_s: float = 300.0,
    once: bool = False,
    metrics_port: int | None = None,
) -> int:
    """``pulse produce chart``: sentiment-chart v2 points → stocktwits.sentiment-chart.

    :param symbols: comma-separated (None: ``PULSE_CHART_SYMBOLS``).
    :param zoom: chart range (None: ``PULSE_CHART_ZOOM``).
    """
    wanted = [s.strip() for s in (symbols or settings.chart_symbols).split(",") if s.strip()]
    if not wanted:
        return _refused("chart", "no symbols: pass --symbols or set PULSE_CHART_SYMBOLS")
    if problem := userinfo_error("PULSE_CHART_URL", settings.chart_url):
        return _refused("chart", problem)
    if bad := [s for s in wanted if not parse.valid_symbol(s)]:
        names = ", ".join(repr(s[:40]) for s in bad)
        return _refused("chart", f"not a symbol: {names} (see producers/parse.py)")

    async def poller(publisher: Publisher, http: Http) -> ChartPoller:
        keys = await asyncio.to_thread(written_keys, settings, SENTIMENT_CHART)
        latest = ChartPoller.latest_from_keys(keys)
        return ChartPoller(settings, publisher, http, wanted, zoom or settings.chart_zoom,
                           latest=latest)  # fmt: skip

    return _serve(settings, "chart", metrics_port, poller, None if once else interval_s)


def run_rest(
    settings: Settings,
    *,
    streams: str | None = None,
    min_interval_s: float | None = None,
    dedup_window_s: float = 3600.0,
    once: bool = False,
    metrics_port: int | None = None,
) -> int:
    """``pulse produce rest``: REST API v2 streams → stocktwits.messages (origin rest).

    :param streams: e.g. ``trending,all,symbol:AAPL`` (None: ``PULSE_REST_STREAMS``).
    :param min_interval_s: least seconds between requests (None: 18, 9 with a token).
    :param dedup_window_s: seconds of the messages topic read back at start for ids
        already written.
    """
    names = (streams or settings.rest_streams).split(",")
    for spec in names:  # `symbol:X` becomes a URL path segment
        arg = spec.strip().partition(":")[2]
        if arg and not parse.valid_symbol(arg):
            return _refused("rest", f"{spec.strip()[:60]!r}: not a symbol (see producers/parse.py)")
    interval = min_interval_s  # 0 is a valid choice (a fake upstream), not "unset"
    if interval is None:
        interval = 9.0 if settings.rest_token else 18.0

    async def poller(publisher: Publisher, http: Http) -> RestPoller:
        seen = SeenIds()
        since_ms = now_ms() - int(dedup_window_s * 1000)
        for key in await asyncio.to_thread(written_keys, settings, MESSAGES, since_ms):
            if key.isdigit():
                seen.add(int(key))
        return RestPoller(settings, publisher, http, names, seen=seen, min_interval_s=interval)

    # rounds back to back: the poller paces its own requests (min_interval_s)
    return _serve(settings, "rest", metrics_port, poller, None if once else 0.0)

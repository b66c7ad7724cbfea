"""Firehose ``/stream`` and ``/sentiment`` SSE clients → Kafka, resuming where Kafka says.

One connection per process. Reconnects on 503, other statuses, dropped connections and read
timeouts with jittered exponential backoff; 401 and 406 stop the process with a clear message
(retrying cannot fix credentials or a client that does not accept gzip). The resume point is
read back from Kafka, never from local disk: a compacted checkpoint topic holds the last
contiguously acknowledged ``seq_id``, and the raw topics are scanned past it for events that
were written just before a crash, so a restart neither skips nor repeats an event.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import confluent_kafka as ck

from pulse import kafka
from pulse.backoff import Backoff
from pulse.lifecycle import stop_on_signals
from pulse.producers import metrics, native, parse
from pulse.producers.httpbody import read_body
from pulse.producers.parse import Parsed, ParseError
from pulse.producers.publish import (
    Publisher,
    now_ms,
    offsets_at,
    partitions,
    read_consumer,
    read_to_end,
)
from pulse.producers.resume import SeqTracker, seq_after
from pulse.producers.sse import MAX_EVENT_BYTES, SseDecoder, SseEvent
from pulse.producers.upstream import FatalUpstreamError, userinfo_error
from pulse.schemas.deadletter import Reason
from pulse.schemas.serde import Serde
from pulse.schemas.topics import (
    CHECKPOINTS,
    DEAD_LETTER,
    LIKES,
    MESSAGES,
    RAW_SENTIMENT,
    SOCIAL,
    TopicSpec,
)
from pulse.settings import Settings, redact_url

log = logging.getLogger(__name__)

SEQ_HEADER = "firehose.seq_id"
STREAM_HEADER = "firehose.stream"  # /stream and /sentiment seq_ids are separate sequences
RESUME_LIMIT_MS = 24 * 3_600_000  # upstream keeps resume positions this long
SCAN_SLACK_MS = 60_000  # clock skew allowed between checkpoint time and Kafka record timestamps


@dataclass(frozen=True)
class Stream:
    """One Firehose endpoint: its path, parser, the topics it writes, its metrics label."""

    path: str
    parse: Callable[[bytes], Parsed]
    topics: tuple[TopicSpec, ...]
    source: str


STREAM = Stream("stream", parse.firehose_event, (MESSAGES, LIKES, SOCIAL), "firehose")
SENTIMENT = Stream("sentiment", parse.sentiment_event, (RAW_SENTIMENT,), "sentiment")


@dataclass
class Resume:
    """Where to reconnect from, and the events past it that Kafka already holds."""

    seq_id: str | None = None
    produced_ms: int = 0
    already_written: set[str] = field(default_factory=set)


# --- resume point from Kafka ----------------------------------------------------------------


def recover(settings: Settings, stream: Stream, serde: Serde | None = None) -> Resume:
    """The resume point of ``stream`` as recorded in Kafka (no local state)."""
    serde = serde or Serde(settings)
    consumer = read_consumer(settings)
    try:
        topic = CHECKPOINTS.full_name(settings)
        parts = [
            ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in partitions(consumer, topic)
        ]
        found: dict[str, Any] | None = None
        for msg in read_to_end(consumer, parts):
            value = msg.value()
            if msg.key() == stream.path.encode() and value is not None:
                found = serde.decode(CHECKPOINTS, value)
        if found is None:
            log.info("no checkpoint for /%s: starting from the live edge", stream.path)
            return Resume()
        resume = Resume(found["seq_id"], found["produced_at_ms"])
        since = max(0, resume.produced_ms - SCAN_SLACK_MS)
        scan: list[ck.TopicPartition] = []
        for spec in (*stream.topics, DEAD_LETTER):
            name = spec.full_name(settings)
            wanted = [ck.TopicPartition(name, p, since) for p in partitions(consumer, name)]
            if wanted:
                scan += offsets_at(consumer, wanted)
        for msg in read_to_end(consumer, scan):
            headers = dict(msg.headers() or ())
            seq = headers.get(SEQ_HEADER)
            # a consumed header's value is bytes (or None); str exists only on the produce side
            if (
                isinstance(seq, bytes)
                and seq
                and headers.get(STREAM_HEADER) == stream.path.encode()
            ):
                if seq_after(seq.decode(), resume.seq_id):
                    resume.already_written.add(seq.decode())
        age_ms = now_ms() - resume.produced_ms
        log.info(
            "resuming /%s after seq_id %s (checkpoint %.1f h old); %d later event(s) already "
            "in Kafka",
            stream.path,
            resume.seq_id,
            age_ms / 3_600_000,
            len(resume.already_written),
        )
        if age_ms > RESUME_LIMIT_MS:
            log.warning(
                "/%s: the checkpoint is older than the Firehose's 24 h resume window; upstream "
                "will continue from the live edge and the events in between are lost here — "
                "backfill them with `pulse produce rest` or a replay (see docs/producers.md)",
                stream.path,
            )
        return resume
    finally:
        consumer.close()


# --- the stream -----------------------------------------------------------------------------


class FirehoseClient:
    """Reads one Firehose endpoint and publishes every event exactly once, in stream order."""

    def __init__(
        self,
        settings: Settings,
        stream: Stream,
        publisher: Publisher,
        *,
        resume: Resume | None = None,
        backoff: Backoff | None = None,
        checkpoint_interval_s: float = 1.0,
        max_events: int | None = None,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.publisher = publisher
        self.resume = resume or Resume()
        self.tracker = SeqTracker(self.resume.seq_id, self.resume.produced_ms)
        self.position = self.resume.seq_id  # last seq_id handed to the producer
        self.backoff = backoff or Backoff(base_s=0.5, cap_s=60.0)
        self.checkpoint_interval_s = checkpoint_interval_s
        self.max_events = max_events
        self.events = self.skipped = self.reconnects = 0
        self.connected = False
        self.fatal: str | None = None
        self.last_event_monotonic = self.last_byte_monotonic = time.monotonic()
        self._written_checkpoint: str | None = self.resume.seq_id
        self._stop = asyncio.Event()
        self._path = stream.path.encode()
        # /stream's Message creates of the common shape: parsed and encoded natively
        self._native = native.firehose_message if stream.parse is parse.firehose_event else None
        self._native_header: bytes | None = None
        # read when scraped, so an event costs a float store, not a locked gauge update
        self.last_event_time = 0.0
        metrics.LAST_EVENT.labels(stream.source).set_function(lambda: self.last_event_time)

    def stop(self) -> None:
        self._stop.set()

    # --- connection loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Stream until stopped (or ``max_events``); raises :class:`FatalUpstreamError`."""
        checkpointer = asyncio.create_task(self._checkpoint_loop())
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=30, sock_read=self.settings.firehose_read_timeout_s
        )
        auth = aiohttp.encode_basic_auth(
            self.settings.firehose_username, self.settings.firehose_password
        )
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "gzip", "Authorization": auth}
        url = f"{self.settings.firehose_url.rstrip('/')}/{self.stream.path}"
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
                while not self._stop.is_set():
                    cause = await self._connect_once(http, url)
                    if cause is None or self._stop.is_set():
                        break
                    self.reconnects += 1
                    metrics.RECONNECTS.labels(self.stream.source, cause).inc()
                    delay = self.backoff.next()
                    log.warning(
                        "/%s: %s; reconnecting in %.1fs from seq_id %s",
                        self.stream.path,
                        cause,
                        delay,
                        self.position,
                    )
                    try:
                        await asyncio.wait_for(self._stop.wait(), delay)
                    except TimeoutError:
                        pass
        except FatalUpstreamError as exc:
            self.fatal = str(exc)
            raise
        finally:
            checkpointer.cancel()
            self.connected = False
            await asyncio.to_thread(self.publisher.flush, 60.0)
            self.write_checkpoint()
            await asyncio.to_thread(self.publisher.flush, 30.0)

    async def _connect_once(self, http: aiohttp.ClientSession, url: str) -> str | None:
        """One connection; returns why it ended (None: stop or done), raises if fatal."""
        params = {"seq_id": self.position} if self.position else None
        try:
            async with http.get(url, params=params) as resp:
                if resp.status == 401:
                    raise FatalUpstreamError(
                        f"/{self.stream.path}: 401 Unauthorized — the Firehose rejected the "
                        "credentials in PULSE_FIREHOSE_USERNAME / PULSE_FIREHOSE_PASSWORD"
                    )
                if resp.status == 406:  # the message only: the first bytes, never the whole body
                    head = await read_body(resp, 300, truncate=True, inflated=True)
                    body = head.decode(errors="replace")
                    raise FatalUpstreamError(
                        f"/{self.stream.path}: 406 Not Acceptable — the Firehose requires gzip "
                        f"(Accept-Encoding: gzip) and a client that decompresses it: {body!r}"
                    )
                if resp.status != 200:
                    return f"HTTP {resp.status}"
                self.connected = True
                seen_before = self.events + self.skipped
                decoder = SseDecoder(MAX_EVENT_BYTES)  # a fresh one: a cut frame is re-sent
                async for chunk in resp.content.iter_any():
                    self.last_byte_monotonic = time.monotonic()  # keep-alives count as life
                    metrics.BYTES.labels(self.stream.source).inc(len(chunk))
                    for event in decoder.feed(chunk):
                        self._handle(event)
                        if self._done():
                            return None
                    if self.events + self.skipped > seen_before:
                        self.backoff.reset()  # events flow again: the next failure starts afresh
                    if self._stop.is_set():
                        return None
                return "stream ended"
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            return f"connection dropped ({type(exc).__name__})"
        except TimeoutError:
            return "read timeout"
        except aiohttp.InvalidURL:  # its text is the URL, which may hold credentials
            return f"InvalidURL: {redact_url(url)}"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            self.connected = False

    def _done(self) -> bool:
        return self._stop.is_set() or (
            self.max_events is not None and self.events + self.skipped >= self.max_events
        )

    # --- one event ---------------------------------------------------------------------------

    def _handle(self, event: SseEvent) -> None:
        self.last_event_monotonic = time.monotonic()
        self.last_event_time = time.time()
        raw = event.data
        fast = None  # (message id, seq_id, framed Avro value) from the native fast path
        if event.truncated:
            seq = None
        else:
            if self._native is not None:
                if self._native_header is None:
                    self._native_header = self.publisher.header(MESSAGES)
                fast = self._native(raw, self._native_header)
            seq = parse.seq_id_of(raw) if fast is None else fast[1]
        if seq is not None:
            if not seq_after(seq, self.resume.seq_id) or seq in self.resume.already_written:
                self.resume.already_written.discard(seq)
                self.skipped += 1
                metrics.DUPLICATES.labels(self.stream.source).inc()
                self.position = seq
                return
        done = self._track(seq)
        headers: kafka.Headers | None = (
            [(SEQ_HEADER, seq.encode()), (STREAM_HEADER, self._path)] if seq else None
        )
        self.events += 1
        if event.truncated:
            self.publisher.dead_letter(
                raw,
                Reason.TOO_LARGE,
                f"SSE event over {MAX_EVENT_BYTES} bytes; first bytes kept",
                stage="parse",
                on_delivered=done,
                headers=headers,
            )
            return
        if fast is not None:
            key = str(fast[0]).encode()
            self.publisher.publish_value(MESSAGES, key, fast[2], headers=headers, on_delivered=done)
        else:
            self._parse_and_publish(raw, headers, done)
        if seq is not None:
            self.position = seq

    def _parse_and_publish(
        self,
        raw: bytes,
        headers: kafka.Headers | None,
        done: Callable[[], None] | None,
    ) -> None:
        try:
            item = self.stream.parse(raw)
        except ParseError as exc:
            self.publisher.reject(raw, exc, on_delivered=done, headers=headers)
        else:
            self.publisher.publish(item, headers=headers, on_delivered=done, raw=raw)

    def _track(self, seq: str | None) -> Callable[[], None] | None:
        if seq is None:
            return None
        return self.tracker.add(seq, now_ms())

    # --- checkpoints -------------------------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            self.publisher.poll(0)
            self.write_checkpoint()

    def write_checkpoint(self) -> None:
        """Record the contiguously acknowledged position, if it moved."""
        seq = self.tracker.committed
        if seq is None or seq == self._written_checkpoint:
            return
        record = {
            "stream": self.stream.path,
            "seq_id": seq,
            "produced_at_ms": self.tracker.committed_produced_ms,
            "written_at_ms": now_ms(),
        }
        self.publisher.publish(Parsed(CHECKPOINTS, self.stream.path, record))
        self._written_checkpoint = seq
        if seq.isdigit():
            metrics.LAST_SEQ.labels(self.stream.source).set(float(seq))

    def health(self) -> dict[str, Any]:
        idle = time.monotonic() - self.last_byte_monotonic
        return {
            "healthy": self.fatal is None
            and (self.connected or self.backoff.attempt < 8)
            and idle < 2 * self.settings.firehose_read_timeout_s,
            "connected": self.connected,
            "stream": self.stream.path,
            "events": self.events,
            "skipped_duplicates": self.skipped,
            "reconnects": self.reconnects,
            "seq_id": self.position,
            "checkpoint_seq_id": self.tracker.committed,
            "seconds_since_last_byte": round(idle, 1),
            "seconds_since_last_event": round(time.monotonic() - self.last_event_monotonic, 1),
            "fatal": self.fatal,
            **self.publisher.stats(),
        }


# --- entry points ---------------------------------------------------------------------------


def run_stream(
    settings: Settings,
    stream: Stream,
    *,
    from_seq_id: str | None = None,
    no_resume: bool = False,
    max_events: int | None = None,
    checkpoint_interval_s: float = 1.0,
    metrics_port: int | None = None,
) -> int:
    """``pulse produce firehose`` (``STREAM``) or ``sentiment`` (``SENTIMENT``): the stream
    into Kafka until stopped; the exit code.

    :param from_seq_id: resume after this seq_id instead of the checkpoint.
    :param no_resume: ignore the checkpoint: start at the live edge.
    :param max_events: stop after this many events (None: never).
    :param metrics_port: None: ``PULSE_METRICS_PORT``; -1: none.
    """
    if problem := userinfo_error("PULSE_FIREHOSE_URL", settings.firehose_url):
        print(f"pulse produce: {problem}", file=sys.stderr)
        return 2
    from pulse.schemas.admin import ensure_topics

    ensure_topics(settings, (*stream.topics, CHECKPOINTS, DEAD_LETTER))
    publisher = Publisher(settings, stream.source)
    if no_resume:
        resume = Resume()
    elif from_seq_id:
        resume = Resume(from_seq_id)
    else:
        resume = recover(settings, stream, publisher.serde)
    client = FirehoseClient(
        settings,
        stream,
        publisher,
        resume=resume,
        checkpoint_interval_s=checkpoint_interval_s,
        max_events=max_events,
    )
    port = settings.metrics_port if metrics_port is None else metrics_port
    server = metrics.serve(settings, port, client.health)

    async def go() -> None:
        with stop_on_signals(client.stop, loop=asyncio.get_running_loop()):
            await client.run()

    try:
        asyncio.run(go())
    except FatalUpstreamError as exc:
        print(f"pulse produce: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    log.info("/%s stopped: %s", stream.path, client.health())
    return 0 if publisher.failed == 0 else 1

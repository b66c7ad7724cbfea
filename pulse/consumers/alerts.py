"""``pulse alerts``: POST every spike to webhooks; commit only what was delivered.

At least once: a spike's offset is committed after every webhook answered 2xx, or after the
spike went to the dead-letter topic (a webhook that kept failing, or a record that cannot be
decoded). A crash in between redelivers it, so receivers de-duplicate on ``id`` (also sent as
the ``Idempotency-Key`` header). Records are handled one at a time, in partition order.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from confluent_kafka import KafkaError, KafkaException, Message

from pulse import health, kafka
from pulse.backoff import Backoff, retry_after_s
from pulse.consumers.kafka_errors import ReaderErrors, ReaderFailed
from pulse.consumers.records import jsonable, printable
from pulse.durations import format_duration_ms
from pulse.lifecycle import stop_on_signals
from pulse.schemas import topics
from pulse.schemas.deadletter import Reason, dead_letter, headers
from pulse.schemas.serde import Serde
from pulse.settings import Settings, redact_url

log = logging.getLogger(__name__)
STAGE = "alerts"


class AlertMetrics(health.Metrics):
    """What ``pulse alerts`` counts (one set per process)."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered = self.counter(
            "pulse_alerts_delivered_total", "Spikes a webhook accepted.", ["webhook"]
        )
        self.attempts = self.counter(
            "pulse_alerts_attempts_total", "Webhook requests made.", ["webhook"]
        )
        self.dead_lettered = self.counter(
            "pulse_alerts_dead_lettered_total", "Spikes sent to the dead-letter topic.", ["reason"]
        )
        self.committed = self.gauge(
            "pulse_alerts_last_commit_timestamp_seconds", "Wall clock of the last commit."
        )


METRICS = AlertMetrics()


# --- pure ------------------------------------------------------------------------------------
def webhook_urls(settings: Settings, extra: list[str] | None = None) -> list[str]:
    """``PULSE_ALERT_WEBHOOK_URLS`` (comma-separated) plus ``--webhook`` ones, de-duplicated."""
    urls = [u.strip() for u in settings.alert_webhook_urls.split(",") if u.strip()]
    return list(dict.fromkeys([*urls, *(extra or [])]))


redact = redact_url  # webhook paths and queries carry tokens: scheme, host and port only
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def scrub(text: str, urls: list[str]) -> str:
    """``text`` (an exception message) with every URL in it redacted, ours first."""
    for url in sorted(urls, key=len, reverse=True):
        text = text.replace(url, redact(url))
    return _URL.sub(lambda m: redact(m.group(0)), text)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook (None if it can): checked once at start, so a typo
    is one clear line, not a retried request or a crash."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return str(exc).split(":")[0]  # e.g. "Port out of range 0-65535" (no URL in it)
    if parts.scheme not in ("http", "https"):
        return "not an http(s) URL"
    if not parts.hostname:
        return "no host"
    return None


def retry_budget_s(settings: Settings) -> float:
    """Longest one spike's delivery may take before it is dead-lettered: every attempt timing
    out, each wait at the longest (a server's Retry-After is capped there too). Webhooks are
    tried in parallel, so this holds for any number of them."""
    attempts = settings.alert_max_attempts
    return attempts * settings.alert_timeout_s + (attempts - 1) * settings.alert_backoff_max_s


DEAD_LETTER_FLUSH_S = 30.0  # one wait for the dead-letter topic to take a record
POLL_MARGIN_S = 60.0  # a poll loop silent this much longer than any delivery is stuck


def liveness_budget_s(settings: Settings) -> float:
    """How long ``/healthz`` stays 200 without a poll: a slow webhook (retries, Retry-After)
    is not a stuck process, so the budget covers one spike's whole delivery."""
    return retry_budget_s(settings) + DEAD_LETTER_FLUSH_S + POLL_MARGIN_S


def alert_id(spike: Mapping[str, Any]) -> str:
    """Stable id of one spike: the same window of the same symbol is one alert."""
    return f"{spike['symbol']}:{spike['window_size_ms']}:{spike['window_start_ms']}"


def idempotency_key(aid: str) -> str:
    """The ``Idempotency-Key`` header: the id itself when it is plain short ASCII, else a
    digest of it (a header must not carry control characters or 5 KB of upstream text)."""
    if re.fullmatch(r"[\x21-\x7e]{1,200}", aid):
        return aid
    return "sha256:" + hashlib.sha256(aid.encode()).hexdigest()


def chat_escape(text: str) -> str:
    """Text for Slack-style receivers, where ``<…>`` is a mention (``<!channel>``) or a link
    (``<https://x|AAPL>``): ``&``, ``<`` and ``>`` escaped as their formats require."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def alert_text(spike: Mapping[str, Any]) -> str:
    """One line for people: what the detector tested (distinct users or messages, over its
    span, which for a SURGE may be hours before the window) against what it expected.

    Records written before ``scored``/``scored_count``/``span_ms`` existed read as a
    message count over the window.
    """
    severity = chat_escape(printable(str(spike["severity"]), 12))
    symbol = chat_escape(printable(str(spike["symbol"])))
    kind = chat_escape(printable(str(spike.get("kind") or "BURST"), 8))
    users = spike.get("scored") == "USERS"
    scored = spike.get("scored_count")
    volume = spike["count"] if scored is None else scored
    span_ms = spike.get("span_ms") or spike["window_size_ms"]
    start_ms = spike["window_end_ms"] - span_ms
    text = (
        f"${symbol}: {volume:g} {'users' if users else 'messages'} in "
        f"{format_duration_ms(span_ms)} from {_iso(start_ms)} — {spike['ratio']:.1f}× the "
        f"expected {spike['expected_count']:.1f} ({kind}, z={spike['score']:.1f}, {severity})"
    )
    if users:
        window = format_duration_ms(spike["window_size_ms"])
        text += f"; {spike['count']} messages in the {window} window"
    return text


def alert_payload(spike: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body POSTed for a spike: the record itself plus id, ISO times and a text line.

    ``text`` makes the body usable as-is by chat webhooks that show a ``text`` field; the
    upstream symbol in it is cut short, stripped of control characters and escaped, so it
    can neither mention a channel nor disguise a link.
    """
    spike = jsonable(dict(spike))
    text = alert_text(spike)
    return {
        "type": "pulse.spike",
        "id": alert_id(spike),
        "text": text,
        "window_start": _iso(spike["window_start_ms"]),
        "window_end": _iso(spike["window_end_ms"]),
        "spike": spike,
    }


class Outcome:
    """How one webhook POST ended: delivered, worth retrying, or final."""

    OK, RETRY, FAIL = "ok", "retry", "fail"


def classify(status: int) -> str:
    """2xx delivered; 408, 425, 429 and 5xx worth retrying; any other answer is final."""
    if 200 <= status < 300:
        return Outcome.OK
    if status in (408, 425, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.FAIL


def retry_delay_s(
    backoff: Backoff, answer_headers: Mapping[str, str] | None, now_s: float, cap_s: float
) -> float:
    """Next pause: the server's ``Retry-After`` if it sent one (capped), else the backoff."""
    delay = backoff.next()
    if answer_headers is not None and (asked := retry_after_s(answer_headers, now_s)) is not None:
        return min(cap_s, max(asked, 0.0))
    return delay


@dataclass(frozen=True)
class Delivery:
    url: str
    ok: bool
    attempts: int
    error: str = ""


def _keep_error(out: list[KafkaError], err: KafkaError | None, _msg: Message) -> None:
    """Delivery callback: the error of a record the broker did not take, into ``out``."""
    if err is not None:
        out.append(err)


def _where(msg: Message) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


class Stopped(Exception):
    """Shutdown was asked for while a delivery waited to retry; do not commit."""


# --- I/O -------------------------------------------------------------------------------------
async def post_with_retries(
    session: aiohttp.ClientSession,
    url: str,
    payload: Mapping[str, Any],
    *,
    max_attempts: int,
    backoff: Backoff,
    cap_s: float,
    sleep: Callable[[float], Awaitable[None]],
) -> Delivery:
    """POST until a 2xx, a final answer, or ``max_attempts``; ``sleep`` may raise Stopped."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    hdrs = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key(payload["id"])}
    error = ""
    for attempt in range(1, max_attempts + 1):
        METRICS.attempts.labels(redact(url)).inc()
        answer_headers: Mapping[str, str] | None = None
        try:
            async with session.post(url, data=body, headers=hdrs) as resp:
                await resp.read()
                outcome = classify(resp.status)
                answer_headers = resp.headers
                error = f"HTTP {resp.status}"
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError) as exc:
            outcome, error = Outcome.FAIL, f"{type(exc).__name__}: invalid URL"  # never heals
        except (aiohttp.ClientError, TimeoutError) as exc:
            # messages may quote the URL, token and all
            outcome, error = Outcome.RETRY, scrub(f"{type(exc).__name__}: {exc}", [url])
        if outcome == Outcome.OK:
            return Delivery(url, True, attempt)
        if outcome == Outcome.FAIL or attempt == max_attempts:
            break
        log.info("webhook %s: %s (attempt %d/%d)", redact(url), error, attempt, max_attempts)
        await sleep(retry_delay_s(backoff, answer_headers, time.time(), cap_s))
    return Delivery(url, False, attempt, error)


class AlertConsumer:
    """One consumer of pulse.spikes in group ``<app_id>-alerts``."""

    def __init__(
        self, settings: Settings, urls: list[str], rng: random.Random | None = None
    ) -> None:
        if not urls:
            raise ValueError("no webhook URL: set PULSE_ALERT_WEBHOOK_URLS or pass --webhook")
        self.settings, self.urls = settings, urls
        self.topic = topics.SPIKES.full_name(settings)
        self._rng = rng or random.Random()
        serde = Serde(settings)
        self._decode = serde.deserializer(topics.SPIKES)
        self._encode_dlq = serde.serializer(topics.DEAD_LETTER)
        self._dlq_topic = topics.DEAD_LETTER.full_name(settings)
        # a broker restarting or a leader moving is logged and waited out; bad credentials,
        # missing ACLs or a topic that never appears end the process (ReaderFailed)
        self.errors = ReaderErrors("pulse alerts")
        # a group member that commits by hand, after delivery; a new group alerts on what is
        # retained. Each connection failure is logged through error_cb, once (quiet).
        self.consumer = kafka.consumer(
            kafka.group_consumer_config(settings, f"{settings.app_id}-alerts", role="alerts"),
            error_cb=self.errors.on_error,
            quiet=True,
        )
        self.producer = kafka.producer(  # dead letters, flushed per spike
            kafka.producer_config(settings, role="alerts"),
            error_cb=self.errors.on_error,
            quiet=True,
        )
        self.last_poll = time.monotonic()
        self.liveness_s = liveness_budget_s(settings)
        self.delivered = self.dead_lettered = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe([self.topic])
        timeout = aiohttp.ClientTimeout(total=self.settings.alert_timeout_s)

        async def sleep(delay_s: float) -> None:
            try:
                await asyncio.wait_for(stop.wait(), delay_s)
            except TimeoutError:
                return
            raise Stopped

        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while not stop.is_set():
                    self.errors.check()
                    msg = await asyncio.to_thread(self.consumer.poll, 0.5)
                    self.last_poll = time.monotonic()
                    if msg is None:
                        continue
                    if (err := msg.error()) is not None:
                        self.errors.on_error(err, msg.topic())
                        continue
                    self.errors.ok(msg.topic())
                    try:
                        await self.handle(msg, session, sleep)
                    except Stopped:
                        break  # uncommitted: redelivered to whoever takes the partition
                    await self._commit(msg)
        finally:
            self.producer.flush(10)
            self.consumer.close()

    async def _commit(self, msg: Message) -> None:
        try:
            await asyncio.to_thread(self.consumer.commit, message=msg, asynchronous=False)
            METRICS.committed.set_to_current_time()
        except KafkaException as exc:
            # the partition moved during delivery (rebalance), or the broker is away: the
            # next commit covers this one, or the partition's new owner redelivers from the
            # last commit, so this spike is sent again (receivers de-duplicate on id)
            log.warning("commit of %s failed: %s", _where(msg), exc)

    async def handle(
        self,
        msg: Message,
        session: aiohttp.ClientSession,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        """Deliver one spike to every webhook; dead-letter it for each that would not take it."""
        raw = msg.value()
        try:
            spike = self._decode(raw) if raw is not None else None
            if spike is None:
                raise ValueError("empty record")
        except Exception as exc:  # noqa: BLE001 - any decode failure is the record's, not ours
            await self._dead_letter(msg, Reason.DECODE_FAILED, f"{type(exc).__name__}: {exc}")
            return
        payload = alert_payload(spike)
        cfg = self.settings
        self.last_poll = time.monotonic()  # a delivery starts: see liveness_budget_s
        results = await asyncio.gather(
            *(
                post_with_retries(
                    session, url, payload,
                    max_attempts=cfg.alert_max_attempts,
                    backoff=Backoff(cfg.alert_backoff_s, cfg.alert_backoff_max_s, self._rng),
                    cap_s=cfg.alert_backoff_max_s,
                    sleep=sleep,
                )
                for url in self.urls
            )
        )  # fmt: skip
        for d in results:
            if d.ok:
                METRICS.delivered.labels(redact(d.url)).inc()
                self.delivered += 1
            else:
                error = f"webhook {redact(d.url)}: {d.error} after {d.attempts} attempt(s)"
                log.warning("alert %s undeliverable: %s", payload["id"], error)
                await self._dead_letter(msg, Reason.DELIVERY_FAILED, error, sleep)

    async def _dead_letter(
        self,
        msg: Message,
        reason: Reason,
        error: str,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """Write the dead letter and wait until it is durable (before the offset that makes
        us forget the spike); while the broker is away, keep trying (``sleep`` may raise
        Stopped), since committing without it would lose the spike."""
        topic, partition, offset = kafka.position(msg)
        record = dead_letter(
            msg.value(), source=topic, stage=STAGE, reason=reason, error=error,
            source_topic=topic, source_partition=partition, source_offset=offset,
        )  # fmt: skip
        value = self._encode_dlq(record)
        while True:
            # this attempt's errors: a late report of an earlier attempt goes to that one's list
            failed: list[KafkaError] = []
            self.producer.produce(
                self._dlq_topic, value, key=topic.encode(),
                headers=headers(reason, STAGE, topic),
                on_delivery=functools.partial(_keep_error, failed),
            )  # fmt: skip
            remaining = await asyncio.to_thread(self.producer.flush, DEAD_LETTER_FLUSH_S)
            while remaining and not failed:  # still in flight: the broker may be restarting
                self.last_poll = time.monotonic()  # waiting on Kafka is not being stuck
                self.errors.check()
                log.warning("dead letter of %s not acknowledged yet; waiting", _where(msg))
                if sleep is not None:
                    await sleep(0)
                remaining = await asyncio.to_thread(self.producer.flush, DEAD_LETTER_FLUSH_S)
            if not failed:
                break
            log.warning("dead letter of %s failed (%s); sending again", _where(msg), failed[0])
            self.errors.check()
            if sleep is not None:
                await sleep(1.0)
        METRICS.dead_lettered.labels(reason.value).inc()
        self.dead_lettered += 1

    def healthy(self, now: float | None = None) -> bool:
        """Alive unless the loop has neither polled nor started a delivery for longer than
        any delivery can take (:func:`liveness_budget_s`): stuck, not just slow."""
        now = time.monotonic() if now is None else now
        return now - self.last_poll < self.liveness_s


async def serve(settings: Settings, urls: list[str], health_port: int) -> int:
    alerts = AlertConsumer(settings, urls)
    stop = asyncio.Event()
    # /healthz: the poll loop is alive (AlertConsumer.healthy reads one float the loop writes)
    server = health.start(settings, health_port, METRICS, live=alerts.healthy)
    log.info("alerts: %s → %s", alerts.topic, ", ".join(redact(u) for u in urls))
    try:
        with stop_on_signals(stop.set, loop=asyncio.get_running_loop()):
            await alerts.run(stop)
    except ReaderFailed as exc:
        log.error("%s", exc)
        return 1
    finally:
        if server is not None:
            server.stop()
    log.info("alerts: %d delivered, %d dead-lettered", alerts.delivered, alerts.dead_lettered)
    return 0


def run(settings: Settings, webhooks: list[str], health_port: int | None = None) -> int:
    """``pulse alerts``: POST every spike to ``webhooks`` and the configured URLs until
    stopped; the exit code (2: no or an invalid URL).

    :param health_port: of /healthz and /metrics (None: ``PULSE_METRICS_PORT``; <0: off).
    """
    urls = webhook_urls(settings, webhooks)
    if not urls:
        print("pulse alerts: no webhook URL (PULSE_ALERT_WEBHOOK_URLS or --webhook)")
        return 2
    for url in urls:
        if (problem := url_problem(url)) is not None:
            print(f"pulse alerts: webhook URL {redact(url)} is invalid ({problem}): fix "
                  "PULSE_ALERT_WEBHOOK_URLS or --webhook", file=sys.stderr)  # fmt: skip
            return 2
    port = settings.metrics_port if health_port is None else health_port
    return asyncio.run(serve(settings, urls, port))

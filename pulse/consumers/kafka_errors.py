"""Which Kafka errors a long-running reader rides out, and which end it.

A broker restarting, a leader election, ``NOT_LEADER_FOR_PARTITION`` from an offsets request
on a topic created a moment ago: librdkafka recovers from all of these by itself, so a reader
logs one line and goes on. Bad credentials, missing permissions, broken TLS, or a topic that
still does not exist after a timeout will not heal by waiting: the reader exits non-zero with
a message that says what to check. Pure bookkeeping (a clock is injected); the readers call
:meth:`ReaderErrors.on_error` from librdkafka's ``error_cb`` and for each error record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

log = logging.getLogger(__name__)

UNKNOWN_TOPIC_TIMEOUT_S = 60.0  # a topic may be created by another command a moment later

_CREDENTIALS = "authentication failed: check PULSE_SECURITY_PROTOCOL, PULSE_SASL_MECHANISM, "
_CREDENTIALS += "PULSE_SASL_USERNAME and PULSE_SASL_PASSWORD"
_FATAL_HINTS = {
    KafkaError._AUTHENTICATION: _CREDENTIALS,
    KafkaError.SASL_AUTHENTICATION_FAILED: _CREDENTIALS,
    KafkaError._SSL: "check PULSE_SSL_CA_LOCATION and the client certificate settings",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "the user lacks read ACLs on the topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "the user lacks ACLs on its consumer group",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "the user lacks cluster ACLs",
    KafkaError._INVALID_ARG: "a client setting is invalid",
}
_UNKNOWN_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}
_BROKER_DOWN = {
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
}  # fmt: skip
_IGNORED = {KafkaError._PARTITION_EOF, KafkaError.NO_ERROR}


class ReaderFailed(Exception):
    """A Kafka error waiting will not fix; the message says what to check."""


def is_fatal(err: KafkaError) -> bool:
    """Fatal to a reader: librdkafka's own fatal errors, and credentials, ACLs or TLS."""
    return bool(err.fatal()) or err.code() in _FATAL_HINTS


class ReaderErrors:
    """Sorts one reader's Kafka errors: transient ones are logged (once per kind every
    ``log_every_s``), fatal ones kept in :attr:`fatal` for the reader's loop to act on.

    :param who: the reader, for messages (``pulse tail``).
    """

    def __init__(
        self,
        who: str,
        unknown_topic_timeout_s: float = UNKNOWN_TOPIC_TIMEOUT_S,
        log_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.who = who
        self.unknown_topic_timeout_s = unknown_topic_timeout_s
        self.log_every_s = log_every_s
        self.clock = clock
        self.fatal: str | None = None
        self.down_since: float | None = None  # first broker error since the last success
        self.unknown_since: dict[str, float] = {}
        self.last_error = ""
        self._logged: dict[int, float] = {}

    def on_error(self, err: KafkaError, topic: str | None = None) -> None:
        """One error from ``error_cb``, a record, or a request (``topic`` if it names one)."""
        code = err.code()
        if code in _IGNORED:
            return
        self.last_error = str(err.str())
        if is_fatal(err):
            hint = _FATAL_HINTS.get(code, "see the error")
            self.fatal = f"{self.who}: {err.str()} — {hint}"
            return
        if code in _UNKNOWN_TOPIC:
            self.unknown_topic(topic or "?")
            return
        if code in _BROKER_DOWN and self.down_since is None:
            self.down_since = self.clock()
        self._log(code, f"{self.who}: {err.str()} (transient: retrying)")

    def on_exception(self, exc: KafkaException, topic: str | None = None) -> None:
        """A request that raised (``offsets_for_times``, ``list_topics``, ``commit``)."""
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is None:
            self._log(-1, f"{self.who}: {exc} (retrying)")
            return
        self.on_error(err, topic)

    def unknown_topic(self, topic: str) -> None:
        """``topic`` does not exist (yet): fatal once it stayed missing for the timeout."""
        first = self.unknown_since.setdefault(topic, self.clock())
        waited = self.clock() - first
        if waited >= self.unknown_topic_timeout_s:
            self.fatal = (
                f"{self.who}: topic {topic} does not exist (waited {waited:.0f} s): create it "
                "with `pulse topics`, or check PULSE_TOPIC_PREFIX and PULSE_BOOTSTRAP_SERVERS"
            )
        else:
            self._log(-2, f"{self.who}: waiting for topic {topic} to be created")

    def ok(self, topic: str | None = None) -> None:
        """A request or a record got through: the broker is back (and ``topic`` exists)."""
        if self.down_since is not None:
            log.info("%s: broker reachable again after %.0f s", self.who,
                     self.clock() - self.down_since)  # fmt: skip
            self.down_since = None
            self._logged.clear()
        if topic is not None:
            self.unknown_since.pop(topic, None)

    def down_for_s(self) -> float | None:
        """Seconds the broker has been unreachable, None if it is not known to be."""
        return None if self.down_since is None else self.clock() - self.down_since

    def check(self) -> None:
        """Raise :class:`ReaderFailed` if a fatal error was seen."""
        if self.fatal is not None:
            raise ReaderFailed(self.fatal)

    def _log(self, kind: int, line: str) -> None:
        now = self.clock()
        if now - self._logged.get(kind, -1e18) >= self.log_every_s:
            self._logged[kind] = now
            log.warning("%s", line)


def partitions_of(
    consumer: Any, names: list[str], errors: ReaderErrors, timeout_s: float = 2.0
) -> list[TopicPartition] | None:
    """Every partition of the topics ``names``, or None (and the reason noted in ``errors``)
    while the broker cannot say yet.

    Readers that only watch (``pulse tail``, the board) assign these partitions themselves
    instead of joining a consumer group: their position stays in the client, so a broker
    restart or a coordinator move costs them neither a rebalance nor a reset to "latest".
    A refused password shows only through ``error_cb``, which librdkafka calls from poll()
    alone: a consumer with nothing assigned yet is polled here (no record can be taken).
    """
    _serve_callbacks(consumer)
    try:
        md = consumer.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        _serve_callbacks(consumer)  # the timeout's real cause (credentials) comes first
        errors.on_exception(exc)
        return None
    out: list[TopicPartition] = []
    for name in names:
        meta = md.topics.get(name)
        if meta is None or not meta.partitions:
            errors.unknown_topic(name)
            return None
        if meta.error is not None:
            errors.on_error(meta.error, name)
            return None
        errors.ok(name)
        out += [TopicPartition(name, p) for p in sorted(meta.partitions)]
    errors.ok()
    return out


def _serve_callbacks(consumer: Any) -> None:
    """``error_cb`` of a consumer that reads nothing yet; never takes a record of one that
    does (its records are for its own loop)."""
    if not consumer.assignment():
        consumer.poll(0)

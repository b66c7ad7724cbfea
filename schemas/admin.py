"""Create the pipeline's topics on a cluster with the partitions and configs of schemas.topics.

Also the one credentials check every start-up shares: librdkafka reports a refused password
only to ``error_cb`` (a request just times out), and serves that callback only from
``poll()``. So both functions here wait in short slices, polling between them, and turn an
authentication error into :class:`AuthenticationFailed` at once instead of a 30 s timeout.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pulse import kafka
from pulse.schemas import topics
from pulse.schemas.topics import TopicSpec
from pulse.settings import Settings

log = logging.getLogger(__name__)

SLICE_S = 0.2  # how long one wait lasts before the error callback is served again
_CHECK = "check PULSE_SECURITY_PROTOCOL, PULSE_SASL_MECHANISM, PULSE_SASL_USERNAME and "
_CHECK += "PULSE_SASL_PASSWORD"
# codes that mean "these credentials will never be accepted": waiting cannot fix them
_REFUSED = {
    KafkaError._AUTHENTICATION: f"Kafka authentication failed: {_CHECK}",
    KafkaError.SASL_AUTHENTICATION_FAILED: f"Kafka SASL authentication failed: {_CHECK}",
    KafkaError._SSL: "Kafka TLS handshake failed (no authentication possible): check "
    "PULSE_SSL_CA_LOCATION, the client certificate settings and PULSE_SECURITY_PROTOCOL",
}


class AuthenticationFailed(Exception):
    """The cluster refused this client's credentials (or TLS); the message says what to
    check, in one line, without the password."""


def refusal(err: KafkaError) -> str | None:
    """The one-line message for ``err`` if it means the credentials are refused, else None."""
    hint = _REFUSED.get(err.code())
    return None if hint is None else f"{hint} ({err.str()})"


class _Refusals:
    """``error_cb`` of one client: keeps the first refusal, ignores what librdkafka retries."""

    def __init__(self) -> None:
        self.message: str | None = None

    def __call__(self, err: KafkaError) -> None:
        self.message = self.message or refusal(err)

    def check(self) -> None:
        if self.message is not None:
            raise AuthenticationFailed(self.message)


def _admin(settings: Settings) -> tuple[AdminClient, _Refusals]:
    refusals = _Refusals()
    return kafka.admin(kafka.admin_config(settings), error_cb=refusals), refusals


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] = topics.ALL, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Idempotent.

    :raises AuthenticationFailed: the cluster refused the credentials.
    """
    admin, refusals = _admin(settings)
    new = [
        NewTopic(
            spec.full_name(settings),
            num_partitions=spec.partitions(settings),
            replication_factor=settings.replication_factor,
            config=dict(spec.config),
        )
        for spec in specs
    ]
    futures = admin.create_topics(new, request_timeout=timeout_s)
    _wait(admin, refusals, list(futures.values()), timeout_s)
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=0)
            created.append(name)
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                refusals.check()  # a request that failed for the credentials says so
                raise
    return created


def _wait(
    admin: AdminClient,
    refusals: _Refusals,
    futures: list[concurrent.futures.Future[None]],
    timeout_s: float,
) -> None:
    """Until every future is done; polls between slices so a refusal ends the wait."""
    deadline = time.monotonic() + timeout_s
    pending = set(futures)
    while pending:
        admin.poll(0)
        refusals.check()
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"Kafka did not answer within {timeout_s:.0f} s "
                               "(check PULSE_BOOTSTRAP_SERVERS)")  # fmt: skip
        _, pending = concurrent.futures.wait(pending, timeout=min(SLICE_S, left))


def check_credentials(settings: Settings, timeout_s: float = 15.0) -> bool:
    """Ask the cluster for metadata until it answers; True once it did, False if it did not
    within ``timeout_s`` (an unreachable broker is left to the caller's own retries).

    :raises AuthenticationFailed: the cluster refused the credentials.
    """
    admin, refusals = _admin(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=min(1.0, timeout_s))
            return True
        except KafkaException:
            pass  # the reason, if it is the credentials, comes through error_cb
        admin.poll(SLICE_S)
        refusals.check()
        if time.monotonic() >= deadline:
            return False

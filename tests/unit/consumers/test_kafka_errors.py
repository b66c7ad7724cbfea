"""Which Kafka errors a reader rides out and which end it (no broker: errors built by hand)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

from pulse.consumers.kafka_errors import ReaderErrors, ReaderFailed, is_fatal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "code, fatal",
    [(KafkaError._AUTHENTICATION, True), (KafkaError.SASL_AUTHENTICATION_FAILED, True),
     (KafkaError.TOPIC_AUTHORIZATION_FAILED, True), (KafkaError._SSL, True),
     (KafkaError.NOT_LEADER_FOR_PARTITION, False), (KafkaError._TRANSPORT, False),
     (KafkaError._ALL_BROKERS_DOWN, False), (KafkaError.LEADER_NOT_AVAILABLE, False),
     (KafkaError.UNKNOWN_TOPIC_OR_PART, False), (KafkaError._TIMED_OUT, False)],
)  # fmt: skip
def test_is_fatal(code: int, fatal: bool) -> None:
    assert is_fatal(KafkaError(code)) is fatal


def test_librdkafka_fatal_errors_are_fatal() -> None:
    assert is_fatal(KafkaError(KafkaError._FENCED, fatal=True))


def test_transient_errors_are_logged_once_per_interval_and_never_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    errors = ReaderErrors("pulse tail", clock=clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(50):  # a broker restarting: a burst of the same error
            errors.on_error(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
            errors.on_exception(KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)))
            clock.now += 0.1
    errors.check()  # does not raise
    assert len(caplog.records) == 2  # one line per kind, not 100
    assert "transient: retrying" in caplog.records[0].getMessage()
    assert errors.down_for_s() == pytest.approx(5.0)
    errors.ok()
    assert errors.down_for_s() is None


def test_bad_credentials_end_the_reader_with_what_to_check() -> None:
    errors = ReaderErrors("pulse alerts")
    errors.on_error(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
    with pytest.raises(ReaderFailed) as exc:
        errors.check()
    assert str(exc.value).startswith("pulse alerts: SASL authentication error")
    assert "PULSE_SASL_PASSWORD" in str(exc.value)


def test_a_topic_that_stays_missing_is_fatal_after_the_timeout_one_that_appears_is_not() -> None:
    clock = Clock()
    errors = ReaderErrors("pulse board", unknown_topic_timeout_s=60, clock=clock)
    errors.on_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "p.pulse.volume")
    clock.now += 59
    errors.unknown_topic("p.pulse.volume")
    errors.check()
    errors.ok("p.pulse.volume")  # created meanwhile
    clock.now += 30
    errors.unknown_topic("p.pulse.volume")
    errors.check()  # its clock started again
    clock.now += 61
    errors.unknown_topic("p.pulse.volume")
    with pytest.raises(ReaderFailed, match=r"topic p\.pulse\.volume does not exist .*pulse topics"):
        errors.check()


def test_end_of_partition_is_not_an_error() -> None:
    errors = ReaderErrors("x")
    errors.on_error(KafkaError(KafkaError._PARTITION_EOF))
    assert errors.last_error == "" and errors.fatal is None


@pytest.mark.parametrize(
    "code", [KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED]
)
def test_a_refused_password_is_named_as_authentication_whatever_librdkafka_says(code: int) -> None:
    errors = ReaderErrors("pulse tail")
    errors.on_error(KafkaError(code, "Broker: refused"))
    with pytest.raises(ReaderFailed, match="authentication failed: check PULSE_SECURITY_PROTOCOL"):
        errors.check()

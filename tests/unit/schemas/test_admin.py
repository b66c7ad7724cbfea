"""Which admin-client errors mean "refused credentials" (no broker: errors built by hand)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from pulse.schemas.admin import AuthenticationFailed, _Refusals, refusal

SCRAM = "SASL authentication error: Authentication failed during authentication due to invalid "
SCRAM += "credentials with SASL mechanism SCRAM-SHA-512"


@pytest.mark.parametrize(
    "code", [KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED]
)
def test_refused_credentials_say_authentication_and_what_to_check(code: int) -> None:
    message = refusal(KafkaError(code, "Broker: refused"))  # whatever librdkafka's text says
    assert message is not None and "authentication failed" in message.lower()
    assert "PULSE_SASL_USERNAME" in message and "PULSE_SASL_PASSWORD" in message
    assert "\n" not in message  # one line of the command's own


def test_a_failed_tls_handshake_is_refused_too() -> None:
    message = refusal(KafkaError(KafkaError._SSL, "SSL handshake failed"))
    assert message is not None and "PULSE_SSL_CA_LOCATION" in message


@pytest.mark.parametrize(
    "code",
    [KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
     KafkaError._RESOLVE, KafkaError.TOPIC_ALREADY_EXISTS, KafkaError.NOT_CONTROLLER],
)  # fmt: skip
def test_an_unreachable_or_busy_broker_is_not_a_refusal(code: int) -> None:
    assert refusal(KafkaError(code)) is None


def test_the_error_callback_keeps_the_first_refusal_and_ignores_retried_errors() -> None:
    refusals = _Refusals()
    refusals(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    refusals.check()  # a broker down is waited out: no raise
    refusals(KafkaError(KafkaError._AUTHENTICATION, SCRAM))
    refusals(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    with pytest.raises(AuthenticationFailed, match="invalid credentials") as exc:
        refusals.check()
    assert str(exc.value).startswith("Kafka authentication failed: check PULSE_SECURITY_PROTOCOL")

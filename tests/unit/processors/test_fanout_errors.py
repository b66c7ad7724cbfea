"""How the fan-out stage ends on a Kafka error: exit 2 (the supervisor's FATAL, no restart)
for what only a configuration change fixes (no broker: errors built by hand)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from pulse.processors.fanout import CONFIG_ERROR, _fatal_error, _fatal_of
from pulse.processors.supervisor import FATAL


def test_the_configuration_exit_code_is_the_one_the_supervisor_does_not_restart() -> None:
    assert CONFIG_ERROR == FATAL


@pytest.mark.parametrize(
    "code",
    [KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
     KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED],
)  # fmt: skip
def test_refused_credentials_or_acls_are_configuration_errors(code: int) -> None:
    fatal = _fatal_error(KafkaError(code, "refused"))
    assert fatal.code == CONFIG_ERROR
    assert "PULSE_" in str(fatal) or "grant" in str(fatal)


def test_a_wrong_password_names_authentication() -> None:
    fatal = _fatal_error(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
    assert "authentication failed" in str(fatal) and "PULSE_SASL_PASSWORD" in str(fatal)


def test_a_fenced_client_is_restarted_not_a_configuration_error() -> None:
    fatal = _fatal_error(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    assert fatal.code == 1


def test_a_broker_down_is_not_fatal() -> None:
    assert _fatal_of(KafkaError(KafkaError._ALL_BROKERS_DOWN)) is None

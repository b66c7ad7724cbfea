"""The Kafka client configs of pulse.kafka, as plain dicts (no client is built, no socket)."""

from __future__ import annotations

from typing import Any

import confluent_kafka as ck
import pytest

from pulse import kafka
from pulse.settings import Settings

SECURED = Settings(
    bootstrap_servers="b1:9093,b2:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="pulse",
    sasl_password="secret",
    ssl_ca_location="/ca.pem",
)
PLAIN = Settings(bootstrap_servers="127.0.0.1:19092")


def every_config(s: Settings) -> dict[str, dict[str, Any]]:
    return {
        "producer": kafka.producer_config(s),
        "stream producer": kafka.producer_config(s, batching=kafka.STREAM),
        "transactional": kafka.transactional_producer_config(s, "tx-1"),
        "group consumer": kafka.group_consumer_config(s, "g"),
        "reader": kafka.reader_config(s, "r"),
        "offsets reader": kafka.offsets_reader_config(s, "g"),
        "admin": kafka.admin_config(s),
    }


@pytest.mark.parametrize("what", list(every_config(PLAIN)))
def test_every_client_connects_with_the_settings_security(what: str) -> None:
    cfg = every_config(SECURED)[what]
    assert cfg.items() >= SECURED.kafka_config().items()
    assert cfg["security.protocol"] == "SASL_SSL"
    assert cfg["sasl.password"] == "secret"


@pytest.mark.parametrize("what", list(every_config(PLAIN)))
def test_a_plaintext_client_names_no_security_and_says_who_it_is(what: str) -> None:
    cfg = every_config(PLAIN)[what]
    assert cfg["bootstrap.servers"] == "127.0.0.1:19092"
    assert not any(k.startswith(("sasl.", "ssl.", "security.")) for k in cfg)
    assert cfg["client.id"].startswith("stocktwits-pulse")
    assert "error_cb" not in cfg and "log_level" not in cfg  # builders add those


@pytest.mark.parametrize("batching", [kafka.STREAM, kafka.FLUSHED])
def test_every_producer_is_idempotent_with_acks_all_and_lz4(batching: kafka.Batching) -> None:
    cfg = kafka.producer_config(PLAIN, batching=batching)
    assert cfg["enable.idempotence"] is True
    assert cfg["acks"] == "all"
    assert cfg["compression.type"] == "lz4"
    assert cfg["delivery.timeout.ms"] == 300_000
    assert "transactional.id" not in cfg
    assert "delivery.report.only.error" not in cfg


def test_stream_producers_linger_longer_and_queue_more_than_flushed_stages() -> None:
    stream = kafka.producer_config(PLAIN, batching=kafka.STREAM)
    flushed = kafka.producer_config(PLAIN)  # FLUSHED is the default
    assert (stream["linger.ms"], flushed["linger.ms"]) == (20, 5)
    assert stream["queue.buffering.max.messages"] == 500_000
    assert stream["queue.buffering.max.kbytes"] == 512 * 1024
    assert flushed["queue.buffering.max.messages"] == 100_000
    assert "queue.buffering.max.kbytes" not in flushed  # librdkafka's 1 GB


def test_producer_options_and_overrides() -> None:
    cfg = kafka.producer_config(
        PLAIN,
        role="fan-out",
        delivery_timeout_ms=120_000,
        errors_only=True,
        overrides={"compression.type": "none"},
    )
    assert cfg["client.id"] == "stocktwits-pulse-fan-out"
    assert cfg["delivery.timeout.ms"] == 120_000
    assert cfg["delivery.report.only.error"] is True
    assert cfg["compression.type"] == "none"  # overrides win
    assert kafka.producer_config(PLAIN)["client.id"] == "stocktwits-pulse-producer"


def test_transactional_producer_delivers_within_its_transaction_timeout() -> None:
    cfg = kafka.transactional_producer_config(PLAIN, "pulse-fan-out-a", role="fan-out")
    assert cfg["transactional.id"] == "pulse-fan-out-a"
    assert cfg["transaction.timeout.ms"] == 60_000
    # librdkafka refuses a delivery timeout longer than the transaction timeout
    assert cfg["delivery.timeout.ms"] <= cfg["transaction.timeout.ms"]
    assert cfg["enable.idempotence"] is True and cfg["acks"] == "all"
    assert cfg["client.id"] == "stocktwits-pulse-fan-out"


def test_group_consumer_commits_by_hand_reads_committed_and_fails_over_fast() -> None:
    cfg = kafka.group_consumer_config(PLAIN, "stocktwits-pulse-alerts", role="alerts")
    assert cfg["group.id"] == "stocktwits-pulse-alerts"
    assert cfg["enable.auto.commit"] is False
    assert cfg["enable.auto.offset.store"] is False
    assert cfg["auto.offset.reset"] == "earliest"
    assert cfg["isolation.level"] == "read_committed"
    assert cfg["session.timeout.ms"] == 10_000
    assert cfg["heartbeat.interval.ms"] * 3 <= cfg["session.timeout.ms"]
    assert cfg["queued.max.messages.kbytes"] == 16 * 1024  # bounded prefetch
    assert cfg["client.id"] == "stocktwits-pulse-alerts"


def test_a_reader_has_a_group_of_its_own_and_never_commits() -> None:
    first, second = (
        kafka.reader_config(PLAIN, "pulse-tail"),
        kafka.reader_config(PLAIN, "pulse-tail"),
    )
    assert first["group.id"].startswith("pulse-tail-")
    assert first["group.id"] != second["group.id"]
    assert first["enable.auto.commit"] is False
    assert first["auto.offset.reset"] == "earliest"
    assert first["isolation.level"] == "read_committed"
    assert "session.timeout.ms" not in first
    dirty = kafka.reader_config(PLAIN, "read", read_committed=False)
    assert dirty["isolation.level"] == "read_uncommitted"


def test_an_offsets_reader_names_the_group_it_asks_about() -> None:
    cfg = kafka.offsets_reader_config(PLAIN, "stocktwits-pulse-fan-out")
    assert cfg["group.id"] == "stocktwits-pulse-fan-out"
    assert cfg["enable.auto.commit"] is False
    assert "auto.offset.reset" not in cfg  # it never reads records


def test_admin_config_from_settings_or_a_ready_mapping() -> None:
    assert kafka.admin_config(PLAIN) == {
        "bootstrap.servers": "127.0.0.1:19092",
        "client.id": "stocktwits-pulse-admin",
    }
    ready = {"bootstrap.servers": "127.0.0.1:1", "security.protocol": "SASL_SSL"}
    assert kafka.admin_config(ready, role="local-stack") == {
        **ready,
        "client.id": "stocktwits-pulse-local-stack",
    }


def test_faust_clients_make_the_same_choices() -> None:
    opts = kafka.faust_broker_options(Settings(bootstrap_servers="a:1,b:2"))
    assert opts["broker"] == ["kafka://a:1", "kafka://b:2"]
    assert opts["producer_acks"] == -1
    assert opts["producer_linger"] == kafka.FLUSHED.linger_ms / 1000
    group = kafka.group_consumer_config(PLAIN, "g")
    assert opts["broker_session_timeout"] * 1000 == group["session.timeout.ms"]
    assert opts["broker_heartbeat_interval"] * 1000 == group["heartbeat.interval.ms"]
    assert opts["consumer_auto_offset_reset"] == group["auto.offset.reset"]


def test_callbacks_are_added_only_when_asked() -> None:
    def on_error(_err: Any) -> None:
        return None

    assert kafka.callbacks() == {}
    assert kafka.callbacks(on_error) == {"error_cb": on_error}
    assert kafka.callbacks(quiet=True) == {"log_level": kafka.QUIET_LOG_LEVEL}


def test_position_of_a_record() -> None:
    msg = ck.Message(topic="pulse.spikes", partition=3, offset=41, value=b"v")
    assert kafka.position(msg) == ("pulse.spikes", 3, 41)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"partition": 0, "offset": 0},
        {"topic": "t", "offset": 0},
        {"topic": "t", "partition": 0},
    ],
)
def test_position_refuses_what_is_not_a_record_of_a_partition(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a record of a partition"):
        kafka.position(ck.Message(**fields))

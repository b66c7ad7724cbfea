from __future__ import annotations

from pathlib import Path

import pytest

from pulse.settings import Settings, SettingsError, markdown_table


def test_env_variables_with_prefix_set_fields_with_their_types() -> None:
    s = Settings.from_env(
        {"PULSE_BOOTSTRAP_SERVERS": "k:1", "PULSE_RAW_PARTITIONS": "12", "PULSE_SPIKE_Z": "3.5"}
    )
    assert (s.bootstrap_servers, s.raw_partitions, s.spike_z) == ("k:1", 12, 3.5)


def test_unset_variables_keep_defaults_and_other_prefixes_are_ignored() -> None:
    s = Settings.from_env({"BOOTSTRAP_SERVERS": "nope"})
    assert s == Settings()


def test_a_bad_number_is_a_clear_error_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="PULSE_RAW_PARTITIONS"):
        Settings.from_env({"PULSE_RAW_PARTITIONS": "six"})


def test_secrets_never_appear_in_repr() -> None:
    s = Settings(firehose_password="hunter2", sasl_password="p4ss", trending_api_key="k3y")
    text = repr(s) + str(s)
    assert "hunter2" not in text and "p4ss" not in text and "k3y" not in text
    assert "firehose_password='***'" in text


def test_security_settings_reach_the_kafka_client_config() -> None:
    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u",
                 sasl_password="p", ssl_ca_location="/ca.pem")  # fmt: skip
    cfg = s.kafka_config()
    assert cfg["security.protocol"] == "SASL_SSL"
    assert cfg["sasl.username"] == "u" and cfg["ssl.ca.location"] == "/ca.pem"
    assert "ssl.key.location" not in cfg
    assert "security.protocol" not in Settings().kafka_config()


def test_topic_prefix_applies_to_names() -> None:
    assert Settings(topic_prefix="dev.").topic("pulse.spikes") == "dev.pulse.spikes"


def test_readme_config_table_is_the_generated_one() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_table() in readme, "README config table is stale: python -m pulse.settings"

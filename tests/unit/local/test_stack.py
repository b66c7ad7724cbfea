"""The embedded stack's pure parts: ids, Java detection, instance bookkeeping (no JVM started)."""

from __future__ import annotations

import base64
import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from pulse.local import stack, tls
from pulse.local.stack import LocalStack, Ports
from pulse.settings import Settings


def test_cluster_id_is_22_url_safe_base64_chars_of_16_bytes_never_starting_with_a_dash() -> None:
    ids = {stack.new_cluster_id() for _ in range(2000)}  # ~31 would start with "-" unfiltered
    assert len(ids) == 2000
    for cid in ids:
        assert len(cid) == 22 and stack.valid_cluster_id(cid)
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
        assert not cid.startswith("-")


@pytest.mark.parametrize(
    "cid, ok",
    [("-Jc6Sx1nRiiRxgHbnN4hkw", True), ("MkU3OEVBNTcwNTJENDM2Qk", True),
     ("short", False), ("MkU3OEVBNTcwNTJENDM2Q!", False), (None, False), (42, False),
     ("-t", False), ("", False)],
)  # fmt: skip
def test_valid_cluster_id(cid: object, ok: bool) -> None:
    assert stack.valid_cluster_id(cid) is ok


def test_the_format_command_keeps_an_id_starting_with_a_dash_in_one_argument() -> None:
    cmd = stack.format_command(["java"], "cp/*", "-Jc6Sx1nRiiRxgHbnN4hkw", Path("s.properties"))
    assert "--cluster-id=-Jc6Sx1nRiiRxgHbnN4hkw" in cmd
    assert "-t" not in cmd and "-Jc6Sx1nRiiRxgHbnN4hkw" not in cmd


def test_a_port_held_by_another_program_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert stack.port_in_use(port)
        s = LocalStack(tmp_path, "busy", Ports(port, stack.free_port(), stack.free_port()))
        with pytest.raises(stack.StackError) as exc:
            s.up(timeout_s=5)
    message = str(exc.value)
    assert f"port {port}" in message and "PULSE_LOCAL_KAFKA_PORT" in message
    assert "\n" not in message
    assert not (tmp_path / "kafka-4.3.1").exists()  # refused before any download
    assert not stack.port_in_use(port)


def _fake_java(directory: Path, banner: str) -> Path:
    directory.mkdir(parents=True)
    fake = directory / "java"
    fake.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def test_a_too_old_or_missing_java_is_one_line_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _fake_java(tmp_path / "jdk11" / "bin", 'openjdk version "11.0.2" 2019-01-15')
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk11"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(stack, "JVM_DIR", tmp_path / "no-jvms")
    stack.find_java.cache_clear()
    try:
        with pytest.raises(stack.StackError) as exc:
            stack.find_java(17)
        assert str(exc.value) == (
            f"Kafka needs Java 17+, found only Java 11 at {old}: install {stack.JAVA_HINT} "
            "and retry."
        )
        monkeypatch.delenv("JAVA_HOME")
        with pytest.raises(stack.StackError, match="needs Java 21\\+, found none"):
            stack.find_java(21)
    finally:
        stack.find_java.cache_clear()


def test_a_half_written_state_file_reads_as_no_state(tmp_path: Path) -> None:
    s = LocalStack(tmp_path, "half")
    s.dir.mkdir(parents=True)
    (s.dir / "state.json").write_text('{"kafka_pid": 12')
    assert s._load_state() == {} and s.ports is None
    assert LocalStack(tmp_path, "half").running() == {"kafka": False, "registry": False}


def test_downloads_may_live_apart_from_the_home(tmp_path: Path) -> None:
    from pulse.settings import Settings

    s = LocalStack.from_settings(
        Settings(local_home=str(tmp_path / "home"), local_downloads=str(tmp_path / "cache"))
    )
    assert s.kafka_home.parent == tmp_path / "cache"
    assert s.dir == tmp_path / "home" / "instances" / "default"
    assert LocalStack(tmp_path / "h").kafka_home.parent == tmp_path / "h"


def test_last_error_picks_the_reason_out_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    log.write_text("INFO starting\nERROR Exiting Kafka due to fatal exception\n"
                   "\tat kafka.Kafka.main\nINFO shutting down\n")  # fmt: skip
    assert stack.last_error(log) == "ERROR Exiting Kafka due to fatal exception"
    assert stack.last_error(tmp_path / "none.log") == "no log"


@pytest.mark.parametrize(
    "banner, major",
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "25.0.1" 2025-10-21 LTS', 25),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", 0),
    ],
)
def test_java_major_reads_the_version_banner(tmp_path: Path, banner: str, major: int) -> None:
    fake = tmp_path / "java"
    fake.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    assert stack.java_major(str(fake)) == major


def test_a_missing_java_binary_is_version_zero() -> None:
    assert stack.java_major("/nonexistent/java") == 0


def test_instance_keeps_its_ports_across_handles(tmp_path: Path) -> None:
    first = LocalStack(tmp_path, "x", Ports(1111, 2222, 3333))
    first._save_state(ports={"kafka": 1111, "controller": 2222, "registry": 3333})
    again = LocalStack(tmp_path, "x")
    assert again.ports == Ports(1111, 2222, 3333)
    assert again.endpoints.bootstrap_servers == "127.0.0.1:1111"
    assert again.endpoints.schema_registry_url == "http://127.0.0.1:3333/apis/ccompat/v7"


def test_a_pid_counts_as_ours_only_if_its_command_line_names_the_instance(tmp_path: Path) -> None:
    me = os.getpid()
    assert stack._alive(me, sys.executable.split("/")[-1])
    assert not stack._alive(me, str(tmp_path / "not-in-my-cmdline"))
    assert not stack._alive(None, "x")


def test_status_of_a_stopped_instance_says_not_running(tmp_path: Path) -> None:
    status = LocalStack(tmp_path, "idle", Ports(1, 2, 3)).status()
    assert status["kafka"] is False and status["registry"] is False


def test_down_on_a_stopped_instance_is_a_no_op(tmp_path: Path) -> None:
    LocalStack(tmp_path, "idle", Ports(1, 2, 3)).down()


# --- a secured broker (SASL_SSL + SCRAM) -----------------------------------------------------

CA = tls.CertificateAuthority(Path("/ca/ca.crt"), Path("/ca/ca.key"))
PORTS = Ports(9092, 9093, 8081)


def test_plaintext_listeners_are_as_before() -> None:
    props = stack.listener_properties(PORTS)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert not any(key.startswith(("ssl.", "sasl.")) for key in props)


def test_a_secured_broker_has_one_sasl_ssl_listener_for_clients_and_itself() -> None:
    props = stack.listener_properties(PORTS, (Path("/t/broker.pem"), Path("/t/ca.crt"), "pw"))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:9092"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"]
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    jaas = props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert 'username="pulse-broker" password="pw";' in jaas and "ScramLoginModule" in jaas
    assert (props["ssl.keystore.type"], props["ssl.keystore.location"]) == ("PEM", "/t/broker.pem")
    assert (props["ssl.truststore.type"], props["ssl.truststore.location"]) == ("PEM", "/t/ca.crt")


def test_scram_users_are_created_at_format_time() -> None:
    users = [stack.scram_argument("pulse-broker", "b"), stack.scram_argument("alice", "a-1")]
    assert users[1] == "SCRAM-SHA-512=[name=alice,password=a-1]"
    cmd = stack.format_command(["java"], "cp/*", "MkU3OEVBNTcwNTJENDM2Qk", Path("s"), users)
    assert cmd[cmd.index(users[0]) - 1] == "--add-scram"
    assert cmd[cmd.index(users[1]) - 1] == "--add-scram"
    assert "--add-scram" not in stack.format_command(["java"], "cp", "x", Path("s"))


@pytest.mark.parametrize(
    "name, password",
    [("alice", "a,b"), ("al ice", "pw"), ("a", ""), ("a", 'p"w'), ("a]", "pw"), ("a", "x" * 129)],
)
def test_scram_credentials_the_format_argument_cannot_carry_are_refused(
    name: str, password: str
) -> None:
    with pytest.raises(stack.StackError, match="SCRAM"):
        stack.SaslSsl(CA, name, password)


def test_clients_of_a_secured_broker_get_its_security_settings(tmp_path: Path) -> None:
    security = stack.SaslSsl(CA, "alice", "Pa55.w0rd")
    s = LocalStack(tmp_path, "sec", PORTS, security=security)
    assert s.client_config() == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
        "sasl.password": "Pa55.w0rd", "ssl.ca.location": "/ca/ca.crt",
    }  # fmt: skip
    settings = security.settings(Settings(bootstrap_servers=s.endpoints.bootstrap_servers))
    assert settings.kafka_config() == s.client_config()  # what every client of ours maps
    assert security.settings(settings, password="other").sasl_password == "other"
    assert LocalStack(tmp_path, "plain", PORTS).client_config() == {
        "bootstrap.servers": "127.0.0.1:9092"
    }


def test_a_secured_broker_starts_without_the_registry(tmp_path: Path) -> None:
    s = LocalStack(tmp_path, "sec", PORTS, security=stack.SaslSsl(CA, "alice", "pw"))
    with pytest.raises(stack.StackError, match=r"registry=False"):
        s.up(timeout_s=1)  # refused before any port, download or JVM
    assert not (tmp_path / "instances").exists()


def test_an_instance_formatted_without_scram_users_is_not_started_secured(tmp_path: Path) -> None:
    ca = tls.make_ca(tmp_path / "ca")
    s = LocalStack(tmp_path, "was-plain", PORTS, security=stack.SaslSsl(ca, "alice", "pw"))
    (s.dir / "kafka-data").mkdir(parents=True)
    (s.dir / "kafka-data" / "meta.properties").write_text("cluster.id=x\n")
    with pytest.raises(stack.StackError, match="formatted without SCRAM users"):
        s._secured_listener()


def test_a_fresh_secured_instance_gets_a_broker_certificate_and_a_stable_broker_password(
    tmp_path: Path,
) -> None:
    ca = tls.make_ca(tmp_path / "ca")
    s = LocalStack(tmp_path, "sec", PORTS, security=stack.SaslSsl(ca, "alice", "pw"))
    secured = s._secured_listener()
    assert secured is not None
    keystore, trust, password = secured
    assert trust == ca.cert and keystore.parent == s.dir / "tls"
    pem = keystore.read_text()  # key + broker certificate + CA, BEGIN and END of each
    assert pem.count("PRIVATE KEY-----") == 2 and pem.count("CERTIFICATE-----") == 4
    assert s._secured_listener()[2] == password  # type: ignore[index] - same across restarts
    assert any(password in arg for arg in s._scram_users())

"""The embedded stack's pure parts: ids, Java detection, instance bookkeeping (no JVM started)."""

from __future__ import annotations

import base64
import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from embedded import stack
from embedded.stack import LocalStack, Ports


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
    from settings import Settings

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

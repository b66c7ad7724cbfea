"""The embedded stack's pure parts: ids, Java detection, instance bookkeeping (no JVM started)."""

from __future__ import annotations

import base64
import os
import stat
import sys
from pathlib import Path

import pytest

from embedded import stack
from embedded.stack import LocalStack, Ports


def test_cluster_id_is_22_url_safe_base64_chars_of_16_bytes() -> None:
    ids = {stack.new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cid in ids:
        assert len(cid) == 22
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


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

"""The embedded broker formats and starts whatever cluster id it is given, and a saved id
from a format that failed is not reused (a private, throwaway instance; broker only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from pulse.local import stack
from pulse.local.stack import LocalStack, free_ports
from pulse.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[LocalStack]:
    # a fresh home, downloads from the shared cache (PULSE_LOCAL_DOWNLOADS / PULSE_LOCAL_HOME)
    s = LocalStack(tmp_path, "fresh", free_ports(), Settings.from_env().local_downloads_path)
    try:
        yield s
    finally:
        s.destroy()


def meta_cluster_id(s: LocalStack) -> str:
    meta = (s.dir / "kafka-data" / "meta.properties").read_text()
    return dict(line.split("=", 1) for line in meta.splitlines() if "=" in line)["cluster.id"]


def brokers(s: LocalStack) -> int:
    admin = AdminClient({"bootstrap.servers": s.endpoints.bootstrap_servers})
    return len(admin.list_topics(timeout=10).brokers)


def test_a_cluster_id_starting_with_a_dash_formats_and_starts(
    instance: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    dashed = "-Jc6Sx1nRiiRxgHbnN4hkw"  # valid base64url, what 1 random id in 64 looks like
    monkeypatch.setattr(stack, "new_cluster_id", lambda: dashed)
    instance.up(timeout_s=120, registry=False)
    assert meta_cluster_id(instance) == dashed
    assert json.loads((instance.dir / "state.json").read_text())["cluster_id"] == dashed
    assert brokers(instance) == 1


def test_a_stale_id_of_a_failed_format_and_half_written_data_are_not_reused(
    instance: LocalStack,
) -> None:
    # what an earlier `up` left: an id saved before its format failed, and a data directory
    # without meta.properties
    instance.dir.mkdir(parents=True)
    (instance.dir / "state.json").write_text(json.dumps({"cluster_id": "-t"}))
    (instance.dir / "kafka-data").mkdir()
    (instance.dir / "kafka-data" / "bootstrap.checkpoint.tmp").write_bytes(b"\0" * 10)
    instance.up(timeout_s=120, registry=False)
    cid = meta_cluster_id(instance)
    assert cid != "-t" and stack.valid_cluster_id(cid)
    assert json.loads((instance.dir / "state.json").read_text())["cluster_id"] == cid
    assert brokers(instance) == 1
    # and a restart keeps the formatted data and its id
    instance.down(only="kafka")
    instance.up(timeout_s=120, registry=False)
    assert meta_cluster_id(instance) == cid and brokers(instance) == 1

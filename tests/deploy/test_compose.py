"""docker-compose.yml, checked without a Docker engine: Compose-spec schema and our rules."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
FIELDS = {PREFIX + f.name.upper() for f in fields(Settings)}
# services that do their job and exit; every other one serves something and needs a healthcheck
ONE_SHOT = {"topics"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_spec() -> dict[str, Any]:
    """The Compose specification's JSON schema, as vendored by check-jsonschema (Apache-2.0).

    Read as a data file, not imported: check-jsonschema's CLI needs a newer click than faust.
    """
    dist = metadata.distribution("check-jsonschema")
    path = dist.locate_file("check_jsonschema/builtin_schemas/vendor/compose-spec.json")
    return json.loads(Path(str(path)).read_text())


def test_the_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = Draft202012Validator(compose_spec())
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_can_fail() -> None:
    bad = {"services": {"x": {"image": "a", "healthcheck": {"interval": 5, "retries": "x"}}}}
    assert list(Draft202012Validator(compose_spec()).iter_errors(bad))


def test_every_service_has_an_image_or_build_and_its_environment(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert "image" in svc or "build" in svc, name
        assert svc.get("environment") or svc.get("command"), f"{name}: no environment"


def test_every_serving_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name not in ONE_SHOT:
            assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


def test_depends_on_waits_for_health_of_services_that_have_one(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond["condition"] == expected, (name, dep)
            if expected == "service_healthy":
                assert services[dep].get("healthcheck"), dep


def test_published_ports_are_unique(compose: dict[str, Any]) -> None:
    published = [
        str(port).split(":")[-2] if str(port).count(":") else str(port)
        for svc in compose["services"].values()
        for port in svc.get("ports", [])
    ]
    assert len(published) == len(set(published)), published


def test_app_environment_names_are_settings_fields(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for var in svc.get("environment", {}):
            if var.startswith(PREFIX):
                assert var in FIELDS, f"{name}: {var} is not a Settings field"


def test_probes_use_the_ports_the_app_opens(compose: dict[str, Any]) -> None:
    defaults = Settings()
    for name, svc in compose["services"].items():
        if "build" not in svc or name in ONE_SHOT:
            continue
        command, env = svc["command"], svc["environment"]
        test = " ".join(svc["healthcheck"]["test"])
        if command[0] == "worker":
            port = int(env.get("PULSE_WEB_PORT", defaults.web_port))
            assert f"127.0.0.1:{port}/readyz" in test, name
        else:  # producers and alerts
            port = int(env.get("PULSE_METRICS_PORT", defaults.metrics_port))
            assert f"127.0.0.1:{port}/healthz" in test, name


def test_two_workers_share_one_consumer_group(compose: dict[str, Any]) -> None:
    workers = [s for s in compose["services"].values() if s.get("command") == ["worker"]]
    assert len(workers) == 2
    assert len({w["environment"]["PULSE_APP_ID"] for w in workers}) == 1


def test_env_example_names_only_settings_fields_and_holds_no_values() -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip().lstrip("# ").strip()
        m = re.fullmatch(r"(PULSE_[A-Z0-9_]+)=(.*)", line)
        if not m:
            continue
        assert m.group(1) in FIELDS, m.group(1)
        if "PASSWORD" in m.group(1) or "KEY" in m.group(1) or "TOKEN" in m.group(1):
            assert m.group(2) == "", f"{m.group(1)} must stay empty in the example"


def test_worker_state_is_on_a_writable_mount(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if svc.get("command") == ["worker"]:
            assert svc["read_only"] is True
            state_dir = svc["environment"]["PULSE_STATE_DIR"]
            mounts = [m.split(":")[0] for m in svc["tmpfs"]]
            assert any(state_dir.startswith(m + "/") for m in mounts), name

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

from pulse.settings import PREFIX, Settings

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


def test_published_ports_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    # the registry lets anyone delete subjects, kafka-ui is a full admin: never on 0.0.0.0
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


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
        assert env["PULSE_BIND_HOST"] == "0.0.0.0", name  # the default (loopback) is for hosts
        if command == ["worker", "--stage", "signals"]:
            port = int(env.get("PULSE_WEB_PORT", defaults.web_port))
            assert f"127.0.0.1:{port}/readyz" in test, name
        elif command == ["worker", "--stage", "fan-out"]:
            port = int(env.get("PULSE_FAN_OUT_PORT", defaults.fan_out_port))
            assert f"127.0.0.1:{port}/healthz" in test, name
        else:  # producers and alerts
            port = int(env.get("PULSE_METRICS_PORT", defaults.metrics_port))
            assert f"127.0.0.1:{port}/healthz" in test, name


def test_one_fan_out_and_two_signals_workers_in_one_app(compose: dict[str, Any]) -> None:
    services = compose["services"].values()
    workers = [s for s in services if s.get("command") == ["worker", "--stage", "signals"]]
    fan_out = [s for s in services if s.get("command") == ["worker", "--stage", "fan-out"]]
    assert len(workers) == 2 and len(fan_out) == 1
    assert not [s for s in services if s.get("command") == ["worker"]]  # both stages at once
    assert len({w["environment"]["PULSE_APP_ID"] for w in workers + fan_out}) == 1


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
        if svc.get("command") == ["worker", "--stage", "signals"]:
            assert svc["read_only"] is True
            state_dir = svc["environment"]["PULSE_STATE_DIR"]
            mounts = [m.split(":")[0] for m in svc["tmpfs"]]
            assert any(state_dir.startswith(m + "/") for m in mounts), name


def env_example() -> dict[str, str]:
    """The variables ``.env.example`` sets (commented-out lines set nothing)."""
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.fullmatch(r"(PULSE_[A-Z0-9_]+)=(.*)", line.strip())
        if m:
            out[m.group(1)] = m.group(2).split("#")[0].strip()
    return out


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}`` / ``${NAME:-default}``, from ``env`` (what .env would hold)."""

    def one(m: re.Match[str]) -> str:
        return env.get(m.group(1)) or (m.group(2) or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", one, value)


def documented_required(name: str) -> bool:
    """``.env.example`` marks ``name`` as required in the comments of its paragraph."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}="))
    block = []
    for line in reversed(lines[:at]):
        if not line.strip():
            break
        block.append(line)
    return any(line.startswith("#") and "required" in line for line in block)


def test_every_profiles_required_variables_are_set_or_documented_with_a_start_up_error(
    compose: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """What each service needs (the producers' own table) is set in .env.example, or marked
    required there, and then the service says which variable is missing and exits 2."""
    from pulse import cli
    from pulse.cli import produce

    example = env_example()
    checked = 0
    for name, svc in compose["services"].items():
        command = svc.get("command") or []
        if command[:1] != ["produce"]:
            continue
        own = {k: interpolate(str(v), example) for k, v in svc.get("environment", {}).items()}
        # `environment:` wins over `env_file:`; without env_file the service never reads .env
        env = {**example, **own} if svc.get("env_file") else own
        settings = Settings.from_env(env)
        missing = produce.missing_config(command[1], settings)
        for var in missing:
            assert documented_required(var), f"{name}: {var} is neither set nor documented"
            assert "env_file" in svc, f"{name} cannot get {var}: it reads no .env"
        if missing:  # the start-up error names every missing variable, before any connection
            assert cli.main(command, settings=settings) == 2
            err = capsys.readouterr().err
            assert all(var in err for var in missing), err
            checked += 1
        if command[1] == "chart":
            assert settings.chart_symbols, f"{name}: PULSE_CHART_SYMBOLS is empty"
    assert checked >= 3  # firehose, sentiment, trending, chart with the example as shipped
    assert documented_required("PULSE_ALERT_WEBHOOK_URLS")  # pulse/consumers/alerts.py exits 2


def test_upstream_services_stop_retrying_a_missing_credential(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        command = svc.get("command") or []
        from pulse.cli.produce import REQUIRED

        if command[:1] == ["alerts"] or (command[:1] == ["produce"] and command[1] in REQUIRED):
            assert svc["restart"].startswith("on-failure:"), name

"""What `pip install .` puts on a user's machine: one import root, no test code, and a `pulse`
that works from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy of what the Dockerfile copies: setuptools' build/ in the repository may
    # hold files since moved away, which a wheel built there would still ship
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("pulse", "producers", "processors", "schemas"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("stocktwits_pulse-*.whl")
    return built


def test_the_wheel_claims_one_import_name_and_ships_no_test_code(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"pulse"}
    for package in ("producers", "processors", "schemas", "consumers", "local", "cli"):
        assert f"pulse/{package}/__init__.py" in names, package
    assert "pulse/schemas/message_event.avsc" in names  # package data comes along
    assert not [n for n in names if "harness" in n or "/tests/" in n or "fake" in n]


def test_the_installed_layout_imports_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = (
        "import pulse.processors.windows as w, pulse.cli, pulse.schemas.serde as s; "
        "print(w.__file__); print(s.SCHEMA_DIR)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    windows_file, schema_dir = done.stdout.split()
    assert Path(windows_file).is_relative_to(site)  # the wheel's copy, not the repository's
    assert (Path(schema_dir) / "message_event.avsc").exists()
    done = subprocess.run(
        [sys.executable, "-m", "pulse.cli", "--help"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "worker" in done.stdout, done.stderr


def test_the_console_script_runs_from_any_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "pulse"), "worker", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--stage" in done.stdout

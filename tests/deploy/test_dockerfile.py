"""The Dockerfile, checked statically (no Docker engine here): pinned bases, non-root, and
every module the package ships is copied into the build."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LINES = [
    line.strip()
    for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in LINES if line.split()[0].upper() == name]


def test_the_base_image_is_pinned_to_a_patch_release() -> None:
    [arg] = [a for a in instructions("ARG") if a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", arg)
    assert all(f.startswith("${PYTHON_IMAGE}") for f in instructions("FROM"))


def test_multi_stage_and_the_last_stage_runs_as_a_non_root_user() -> None:
    stages = [i for i, line in enumerate(LINES) if line.upper().startswith("FROM ")]
    assert len(stages) >= 2
    last = LINES[stages[-1] :]
    users = [line.split()[1] for line in last if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert any("COPY --from=build" in line for line in last)
    assert not any(line.upper().startswith(("RUN APT", "RUN PIP")) for line in last)


def test_every_shipped_module_and_package_is_copied() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    copied = instructions("COPY")
    ignored = (ROOT / ".dockerignore").read_text().split()
    # each installed package's source folder: its package-dir entry, or the dotted path
    folders = {
        tool["package-dir"].get(p, p.replace(".", "/")).split("/")[0] for p in tool["packages"]
    }
    for folder in folders:
        assert any(line.split()[:2] == [f"{folder}/", f"{folder}/"] for line in copied), folder
        assert folder not in ignored and f"{folder}/" not in ignored


def test_compose_images_are_pinned() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        image = svc["image"]
        if "build" in svc:
            continue  # our own image, built from ./Dockerfile
        tag = image.rsplit(":", 1)[1] if ":" in image else "latest"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"

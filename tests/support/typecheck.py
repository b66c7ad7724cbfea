"""Type-check the product code with mypy, as it is imported: ``pulse.*``.

The design-card folders (``producers/``, ``processors/``, ``schemas/``) are installed beneath
``pulse`` by setuptools' ``package-dir``; mypy resolves modules from directories, not from the
editable install's import hook, so it is given a mirror of the installed layout made of
symlinks (in ``.mypy_cache/tree``) and its paths are mapped back to the repository's.
Settings (strict on the pure modules) are in pyproject.toml's ``[tool.mypy]``.

    python -m tests.support.typecheck      # exit status of mypy; `make test` runs it
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_dirs() -> dict[str, Path]:
    """Installed package → its source folder, from pyproject.toml's package-dir."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in tool["package-dir"].items()}


def mirror(tree: Path) -> Path:
    """``tree/pulse``: the installed layout, as symlinks into the repository."""
    shutil.rmtree(tree, ignore_errors=True)
    dirs = package_dirs()
    top = tree / "pulse"
    top.mkdir(parents=True)
    for entry in dirs.pop("pulse").iterdir():
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for name, folder in dirs.items():
        (tree / name.replace(".", "/")).symlink_to(folder)
    return top


def main() -> int:
    tree = ROOT / ".mypy_cache" / "tree"
    mirror(tree)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "-p",
            "pulse",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    print(repository_paths(done.stdout), done.stderr, sep="\n" if done.stderr else "")
    return done.returncode


def repository_paths(report: str) -> str:
    """mypy's lines with the mirror's paths (pulse/processors/x.py) as the repository's."""
    prefixes = sorted(
        (
            (name.replace(".", "/") + "/", folder.relative_to(ROOT).as_posix() + "/")
            for name, folder in package_dirs().items()
        ),
        key=lambda pair: -len(pair[0]),
    )
    lines = []
    for line in report.splitlines():
        for mirrored, real in prefixes:
            if line.startswith(mirrored):
                line = real + line[len(mirrored) :]
                break
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

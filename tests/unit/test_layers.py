"""Floors that never run back down: which product module may import which.

Read with ``ast`` from the sources (nothing is imported), so a wrong import fails here before
it can make a cycle at run time.

- ground floor: every ``pulse`` infrastructure module (``pulse/*.py``, ``pulse/local/``) and
  ``pulse.schemas``. They import nothing of the stages or the CLI.
- stages: ``pulse.producers``, ``pulse.processors``, ``pulse.consumers``. Each imports the
  ground floor and itself, never another stage: stages share helpers through the ground floor.
- top floor: ``pulse.cli`` (the ``pulse`` command and the demo). It may import anything;
  nothing outside it imports it.

Product code imports first-party code only as ``pulse.*`` (a bare ``producers`` resolves from
the repository root but not once installed) and ships no test code (no ``tests``, no pytest).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Folder on disk → the package it is installed as (pyproject.toml's package-dir).
PACKAGE_DIRS = {
    "pulse": "pulse",
    "producers": "pulse.producers",
    "processors": "pulse.processors",
    "schemas": "pulse.schemas",
}
STAGES = ("producers", "processors", "consumers")
GROUND = ("ground", "schemas")
# The import names the tree had before the single root; none may come back.
OLD_ROOTS = {"settings", "cli", "demo", "embedded", "consumers", *PACKAGE_DIRS} - {"pulse"}
TEST_ONLY = {"tests", "pytest", "_pytest"}


def floor(module: str) -> str | None:
    """The floor a first-party module stands on (a stage's name, ``schemas``, ``cli`` or
    ``ground``), or None for a third-party one."""
    parts = module.split(".")
    if parts[0] != "pulse":
        return None
    if len(parts) > 1 and parts[1] in (*STAGES, "schemas", "cli"):
        return parts[1]
    return "ground"


def may_import(importer: str, imported: str) -> bool:
    """Whether a module on floor `importer` may import one on floor `imported`."""
    if importer == "cli" or importer == imported:
        return True
    if imported == "cli":
        return False
    if importer in GROUND:
        return imported in GROUND
    return imported in GROUND  # a stage: the ground floor, or itself (above)


def module_name(path: Path) -> str:
    """The dotted name a product source file is installed as."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE_DIRS[parts[0]], *parts[1:]])


def product_sources() -> list[Path]:
    return sorted(
        path
        for folder in PACKAGE_DIRS
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything a module imports, relative imports resolved.

    ``from a import b`` yields ``a.b``: b may be a submodule (``from pulse import cli``), and
    an attribute's name still starts with its module's, so the floor comes out the same.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def all_imports() -> Iterator[tuple[str, int, str, str]]:
    """(file, line, importing module, imported module) over the product sources."""
    for path in product_sources():
        module = module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = str(path.relative_to(ROOT))
        for line, imported in imported_modules(tree, module, path.name == "__init__.py"):
            yield rel, line, module, imported


IMPORTS = list(all_imports())


def test_the_product_sources_are_found() -> None:
    names = {module for _, _, module, _ in IMPORTS}
    assert {"pulse.settings", "pulse.producers.parse", "pulse.schemas.topics"} <= names
    assert "pulse.cli" in names and "pulse.consumers.alerts" in names


def test_floors_never_run_back_down() -> None:
    wrong = [
        f"{rel}:{line}: {module} ({floor(module)}) imports {imported} ({floor(imported)})"
        for rel, line, module, imported in IMPORTS
        if (target := floor(imported)) is not None and not may_import(floor(module) or "", target)
    ]
    assert not wrong, "\n".join(wrong)


def test_first_party_imports_use_the_pulse_root() -> None:
    bare = [
        f"{rel}:{line}: {imported}"
        for rel, line, _, imported in IMPORTS
        if imported.split(".")[0] in OLD_ROOTS
    ]
    assert not bare, "\n".join(bare)


def test_product_code_ships_no_test_code() -> None:
    test_imports = [
        f"{rel}:{line}: {imported}"
        for rel, line, _, imported in IMPORTS
        if imported.split(".")[0] in TEST_ONLY
    ]
    assert not test_imports, "\n".join(test_imports)


@pytest.mark.parametrize(
    "importer, imported, allowed",
    [
        ("ground", "schemas", True),
        ("schemas", "ground", True),
        ("ground", "producers", False),
        ("schemas", "producers", False),
        ("producers", "ground", True),
        ("producers", "producers", True),
        ("producers", "processors", False),
        ("consumers", "producers", False),
        ("processors", "cli", False),
        ("ground", "cli", False),
        ("cli", "processors", True),
    ],
)
def test_may_import(importer: str, imported: str, allowed: bool) -> None:
    assert may_import(importer, imported) is allowed


@pytest.mark.parametrize(
    "path, expected",
    [
        ("pulse/kafka.py", "pulse.kafka"),
        ("pulse/cli/__init__.py", "pulse.cli"),
        ("producers/parse.py", "pulse.producers.parse"),
        ("schemas/__init__.py", "pulse.schemas"),
    ],
)
def test_module_name(path: str, expected: str) -> None:
    assert module_name(ROOT / path) == expected


def test_relative_imports_are_resolved() -> None:
    tree = ast.parse("from . import parse\nfrom ..schemas.topics import MESSAGES\n")
    found = [name for _, name in imported_modules(tree, "pulse.producers.pollers", False)]
    assert found == ["pulse.producers.parse", "pulse.schemas.topics.MESSAGES"]

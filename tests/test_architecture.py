"""The code's shape, kept so: public APIs of Lightning, torch and TensorBoard only, small files and functions, and
imports that only run one way (ARCHITECTURE.md draws the same table)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "project"

MAY_IMPORT = {
    "errors": set(),
    "plain": set(),
    "trusted": {"errors"},
    "files": {"errors", "files"},
    "tasks": {"errors", "plain", "trusted", "tasks"},
    "networks": {"errors", "files", "networks"},
    "data": {"errors", "plain", "trusted", "files", "tasks", "data"},
    "reports": {"errors", "tasks", "data", "reports"},
    "training": {"errors", "trusted", "plain", "files", "tasks", "networks", "data", "training"},
    "inference": {"errors", "files", "tasks", "networks", "data", "reports", "training", "inference"},
    "cli": {"errors", "trusted", "plain", "files", "tasks", "networks", "data", "reports", "training", "inference"}
    | {"cli"},
    "sweeps": {"errors", "files", "tasks", "data", "reports", "training", "cli", "sweeps"},
}
"""Which parts (folders) of the package each part may import, bottom to top: networks, tasks and data import no
training code, training imports no inference or command line, the command line sees (almost) everything, and the
sweeps run the command line."""


def modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py"))


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_private_name_of_a_library_is_used(path):
    """No ``_name`` attribute (the project's own code has none either, so none can be a library's), and no import of a
    private module or name: they break on the next upgrade."""
    private = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            private.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith(("project", "__future__")):
            names = [alias.name for alias in node.names if alias.name.startswith("_")]
            if names or "._" in f".{node.module}":
                private.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert private == []


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_files_and_functions_stay_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 400  # a hint to look for a second concern, not a budget to squeeze under
    long_functions = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 50
    ]
    assert long_functions == []


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    part = part_of(path)
    if part in ("__init__", "__main__"):
        return
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        imported |= {name.split(".")[1] for name in names if name.startswith("project.")}
    assert imported <= MAY_IMPORT[part], f"{part} imports {sorted(imported - MAY_IMPORT[part])}"


def test_every_part_of_the_package_is_in_the_import_table():
    assert {part_of(path) for path in modules()} - {"__init__", "__main__"} == set(MAY_IMPORT)

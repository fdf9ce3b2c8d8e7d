"""The code's shape, kept so: public APIs of Lightning, torch and TensorBoard only, a short public surface per module,
small files and functions, and imports that only run one way (ARCHITECTURE.md draws the same table)."""

from __future__ import annotations

import ast
import functools
import re
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
    """No private name of a library: no ``_name`` attribute but the class's own (``self._x``, ``cls._x``), no import of
    a private module or name; they break on the next upgrade. A module's own ``_helpers`` are called by name, and no
    other module imports them."""
    private = []
    for node in ast.walk(ast.parse(path.read_text())):
        own = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") and not own:
            private.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names = [alias.name for alias in node.names if alias.name.startswith("_")]
            if names or "._" in f".{node.module}":
                private.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert private == []


def module_level_names(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [target.id for target in targets if isinstance(target, ast.Name)]
    return [name for name in names if not name.startswith("_")]


@functools.cache
def clone_texts() -> dict[Path, str]:
    """What the clone says: the package's modules, the tests, scripts, examples, notebooks, configs and docs."""
    root = PACKAGE.parent
    folders = [root / name for name in ("project", "tests", "scripts", "examples", "notebooks", "docs")]
    files = [file for folder in folders for file in folder.rglob("*") if file.suffix in TEXT_SUFFIXES]
    files += [file for file in root.glob("*") if file.suffix in TEXT_SUFFIXES]
    return {file: file.read_text(errors="replace") for file in files if file.is_file()}


TEXT_SUFFIXES = (".py", ".yaml", ".md", ".ipynb", ".toml")


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_a_public_name_is_one_that_something_outside_its_module_names(path):
    """A module's public surface is what other code, tests, configs or the docs use; its helpers are ``_private``,
    free to change. (Found by name: a word elsewhere that happens to match keeps a name public, never the reverse.)"""
    outside = "\n".join(text for file, text in clone_texts().items() if file != path)
    unused = [
        name for name in module_level_names(ast.parse(path.read_text())) if not re.search(rf"\b{name}\b", outside)
    ]
    assert unused == [], f"used only inside {path.name}: make them private (_name)"


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

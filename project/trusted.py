"""Your own code, trusted because you named it.

Checkpoints name the classes they were built from (a network, a data module), and a file never chooses code to run:
those names are looked up among classes already imported (:func:`project.training.checkpoints.allowed_class`). A
class of your own, in a module outside ``project/``, is imported because you name its module:

- in a config or on the command line of ``python -m project`` (``--model.network my_nets.SmallResNet``): the command
  line imports what it builds;
- with ``--trust my_nets`` on ``scripts/evaluate.py``, ``scripts/export.py`` and ``scripts/predict.py``, or
  :func:`trust` in a notebook;
- once for all, in the ``pyproject.toml`` of the folder you run in (or a folder above it)::

      [tool.project]
      trusted = ["my_nets", "examples.own_network.resnet"]

Modules are found as ``python -m`` finds them: from the folder of that ``pyproject.toml``, or the current folder.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import tomllib

from project.errors import UserInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

HOW_TO_TRUST = (
    "to trust a module of your own, name it: --trust your.module (scripts/evaluate.py, export.py, predict.py), or "
    'trusted = ["your.module"] under [tool.project] in pyproject.toml'
)
"""What a refusal of a class says: how to name its module."""


def trust(*modules: str, root: Path | None = None) -> None:
    """Import ``modules`` (dotted names, found from ``root``: default the current folder), so that their classes are
    on the allow-lists of checkpoints; one error line for a module that does not import."""
    folder = str((root or Path.cwd()).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise UserInputError(f"cannot import the trusted module {name!r} from {folder}: {error}") from None


def project_settings(start: Path | None = None) -> tuple[Path, dict] | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (default: the current folder) with a ``[tool.project]``
    table: its folder and that table."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        if not path.is_file():
            continue
        try:
            table = tomllib.loads(path.read_text()).get("tool", {}).get("project")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise UserInputError(f"{path}: not a readable TOML file ({error})") from None
        if table is not None:
            return candidate, table
    return None


def trust_declared(start: Path | None = None) -> list[str]:
    """Import the modules ``[tool.project] trusted`` of the nearest ``pyproject.toml`` lists; the names imported
    (an already imported module costs a lookup)."""
    found = project_settings(start)
    if found is None:
        return []
    folder, table = found
    modules = table.get("trusted", [])
    if not isinstance(modules, list) or not all(isinstance(name, str) for name in modules):
        raise UserInputError(
            f"{folder / 'pyproject.toml'}: [tool.project] trusted must be a list of module names, got {modules!r}"
        )
    trust(*modules, root=folder)
    return modules


def add_trust_option(parser: argparse.ArgumentParser) -> None:
    """``--trust MODULE`` (repeatable) on a script that loads checkpoints: :func:`trust` its values."""
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module of your own (a network or data module class the checkpoint names; found from the "
        "current folder) before loading: a checkpoint alone never names code to run",
    )

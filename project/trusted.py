"""Your own code, trusted because you named it.

Checkpoints name the classes they were built from (a network, a data module, a metric), and a file never chooses code
to run: those names are looked up among classes already imported
(:func:`project.training.checkpoints.allowed_class`). A class of your own, in a module outside ``project/``, is
imported because you name its module:

- in a config or on the command line of ``python -m project`` (``--model.network my_nets.SmallResNet``): the command
  line imports what it builds;
- with ``--trust my_nets`` on ``scripts/evaluate.py``, ``scripts/export.py`` and ``scripts/predict.py`` (found from
  the current folder, as ``python -m`` finds modules), or :func:`trust` in a notebook;
- once for all, in the ``pyproject.toml`` of this project's own clone (the folder that holds ``project/``), found
  from that folder::

      [tool.project]
      trusted = ["my_nets", "examples.own_network.resnet"]

Only that one file is read, wherever a command runs: a ``pyproject.toml`` in the folder of a downloaded run, or in
a folder above, never names code to import. A folder is on ``sys.path`` only while the modules named are imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from project.errors import UserInputError, first_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The clone's folder, beside ``project/``: where its ``pyproject.toml`` is (absent for a non-editable install)."""
HOW_TO_TRUST = (
    "to trust a module of your own, name it: --trust your.module (scripts/evaluate.py, export.py, predict.py), or "
    'trusted = ["your.module"] under [tool.project] in the pyproject.toml beside project/'
)
"""What a refusal of a class says: how to name its module."""


def trust(*modules: str, root: Path | None = None) -> None:
    """Import ``modules`` (dotted names, found from ``root``: default the current folder, which is on ``sys.path``
    only while they are imported), so that their classes are on the allow-lists of checkpoints; one error line for a
    module that does not import."""
    if not modules:
        return
    folder = str((root or Path.cwd()).resolve())
    sys.path.insert(0, folder)
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as error:  # the user's own module: any error in it, said in one line
                raise UserInputError(
                    f"cannot import the trusted module {name!r} from {folder}: {type(error).__name__}: "
                    f"{first_line(error)}"
                ) from None
    finally:
        sys.path.remove(folder)


def declared_modules(root: Path = PROJECT_ROOT) -> list[str]:
    """The modules ``[tool.project] trusted`` of ``root``'s ``pyproject.toml`` lists (none without that file)."""
    path = root / "pyproject.toml"
    if not path.is_file():
        return []
    try:
        settings: Any = tomllib.loads(path.read_text()).get("tool", {}).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UserInputError(f"{path}: not a readable TOML file ({first_line(error)})") from None
    modules = settings.get("trusted", []) if isinstance(settings, dict) else None
    if not isinstance(modules, list) or not all(isinstance(name, str) for name in modules):
        raise UserInputError(f"{path}: [tool.project] trusted must be a list of module names, got {modules!r}")
    return modules


def trust_declared(root: Path = PROJECT_ROOT) -> list[str]:
    """Import the modules the clone's ``pyproject.toml`` trusts; their names (an imported module costs a lookup)."""
    modules = declared_modules(root)
    trust(*modules, root=root)
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

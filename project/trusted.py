"""Which code a config, a command line or a file may name: the libraries' classes, and your own code once you trust
it. Everything else a file holds is data.

Options that take a class (``--model.network``, ``--trainer.callbacks``, ``--data``, ...) name it by class path, and
the command line builds it. :func:`refuse_untrusted_code` checks every class path and every function the parser read,
from the command line, a ``--config`` file, a run's saved ``config.yaml``, a sweep's ``best.yaml`` or spec, before
anything is built: a class must come from one of :data:`_LIBRARIES` or from a module you trust, and code (an option
typed ``Callable``, such as ``LambdaCallback``'s hooks: a function or any callable object) from a module you trust.
The parser imports a module a value names before that check, so :func:`guard_parser_imports` holds its imports to
the same modules, and never a ``__main__`` module. Checkpoints name their classes too; those are looked up among
classes already imported (:func:`project.training.checkpoints.allowed_class`).

Your own modules (outside ``project/``) are trusted because you name them:

- ``--trust my_nets`` on every subcommand of ``python -m project`` (``fit``, ``evaluate``, ``export``, ``predict``,
  ...), found from the current folder; or :func:`trust` in a notebook;
- once for all, in the ``pyproject.toml`` of this project's own clone (the folder that holds ``project/``), found
  from that folder::

      [tool.project]
      trusted = ["my_nets", "examples.own_network.resnet"]

Trusting a module trusts its submodules. Only that one ``pyproject.toml`` is read, wherever a command runs: one in the
folder of a downloaded run, or in a folder above, never names code to import. A folder is on ``sys.path`` only while
the modules named are imported, and ``python -m project`` takes the current folder off ``sys.path`` before it imports
anything (``project/__init__.py``): a file such as ``tensorboard.py`` in a received run folder is never imported in
place of a library.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace, set_parsing_settings
from jsonargparse import Path as ParsedPath

from project.errors import UserInputError, first_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The clone's folder, beside ``project/``: where its ``pyproject.toml`` is (absent for a non-editable install)."""
_LIBRARIES = ("project", "torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "lightning_fabric")
"""The packages whose classes a config may name without trust (top-level import names)."""
HOW_TO_TRUST = (
    "to trust a module of your own, name it: --trust your.module (on every python -m project command), or "
    'trusted = ["your.module"] under [tool.project] in the pyproject.toml beside project/'
)
"""What a refusal of a class or function says: how to name its module."""
TRUSTED: set[str] = set()
"""The modules trusted in this process (:func:`trust`): named with ``--trust``, in the clone's ``pyproject.toml``, or
by :func:`trust` in Python."""
_PARSER_ALLOWS: set[str] = set()
"""The trusted modules the command line's parser may import now (:func:`guard_parser_imports`)."""


def trust(*modules: str, root: Path | None = None) -> None:
    """Trust ``modules`` (dotted names): import them, found from ``root`` (default the current folder, which is on
    ``sys.path`` only while they are imported), so that their classes may be named by configs and checkpoints; one
    error line for a module that does not import."""
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
            TRUSTED.add(name)
    finally:
        sys.path.remove(folder)
    guard_parser_imports()


def guard_parser_imports() -> None:
    """Let the command line's parser import, for a class path or function a value names, only the modules of
    :data:`_LIBRARIES` and the trusted ones, and never a ``__main__`` module of theirs (a program: importing it runs
    it).

    The parser (jsonargparse) imports what a value names before :func:`refuse_untrusted_code` sees the parsed config,
    so its own ``import_path_denylist`` and ``import_path_allowlist`` hold it to these (docs/design_notes.md). Modules
    no longer trusted are denied again; short names (``EarlyStopping``) still resolve to a class of these modules."""
    allowed = {name for name in TRUSTED if not _own_part_of_library(name)}
    revoked = sorted(_PARSER_ALLOWS - allowed)
    programs = [name for module in sorted(allowed) for name in _main_modules(module)]
    set_parsing_settings(
        import_path_denylist=["*", *library_main_modules(), *programs, *revoked],
        import_path_allowlist=[*_LIBRARIES, *sorted(allowed)],
    )
    _PARSER_ALLOWS.clear()
    _PARSER_ALLOWS.update(allowed)


def _own_part_of_library(name: str) -> bool:
    """Whether a trusted ``name`` lies in one of :data:`_LIBRARIES` already, or in jsonargparse (which the parser never
    imports for a value: a value could change its settings)."""
    return name.partition(".")[0] in (*_LIBRARIES, "jsonargparse")


def library_main_modules() -> tuple[str, ...]:
    """The ``__main__`` modules inside :data:`_LIBRARIES` (``torch.utils.model_dump.__main__``), found on disk."""
    return tuple(name for library in _LIBRARIES for name in _main_modules(library))


@functools.cache
def _main_modules(package: str) -> tuple[str, ...]:
    """The ``__main__`` modules inside ``package`` (an imported or importable one), found on disk: none for a module
    that is no package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # not importable (then not imported by the parser either), or no spec
        return ()
    found = []
    for root in (spec.submodule_search_locations or []) if spec else []:
        for folder, _, files in os.walk(root):
            if any(file.startswith("__main__.") for file in files):
                parts = [package, *Path(folder).relative_to(root).parts, "__main__"]
                if all(part.isidentifier() for part in parts):
                    found.append(".".join(parts))
    return tuple(found)


def _declared_modules(root: Path = _PROJECT_ROOT) -> list[str]:
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


def trust_declared(root: Path = _PROJECT_ROOT) -> list[str]:
    """Trust the modules the clone's ``pyproject.toml`` lists; their names (an imported module costs a lookup)."""
    modules = _declared_modules(root)
    trust(*modules, root=root)
    return modules


def trusted(module: str) -> bool:
    """Whether ``module`` is trusted: one :func:`trust` was given, or a submodule of one."""
    return any(module == name or module.startswith(f"{name}.") for name in TRUSTED)


def _may_be_named(module: str) -> bool:
    """Whether a config may name a class of ``module``: one of :data:`_LIBRARIES`, or a trusted module; never a
    ``__main__`` module (a program)."""
    return (module.partition(".")[0] in _LIBRARIES or trusted(module)) and "__main__" not in module.split(".")


def take_trust_options(args: list[str]) -> tuple[list[str], list[str]]:
    """``--trust MODULE`` / ``--trust=MODULE`` taken out of a command line: the modules, and the other arguments."""
    modules, rest = [], []
    index = 0
    while index < len(args):
        option, equals, value = args[index].partition("=")
        if option == "--trust":
            if not equals:
                if index + 1 >= len(args) or args[index + 1].startswith("-"):
                    raise UserInputError("--trust: expected a module of your own (--trust my_nets)")
                value = args[index + 1]
                index += 1
            modules.append(value)
        else:
            rest.append(args[index])
        index += 1
    return modules, rest


def refuse_untrusted_code(value: Any, where: str = "") -> None:
    """Refuse, naming the option, a class path outside :func:`_may_be_named` and code outside a trusted module
    anywhere in ``value``: the command line's parsed config (jsonargparse's ``Namespace``), or plain dicts and lists
    read from a file. Code is every callable value other than a class: a function, a ``functools.partial``, and a
    callable object (``builtins.exit``, a numpy ufunc, an ``operator.itemgetter``, a ctypes function), judged by its
    class's module where it names none of its own. Nothing is imported or built here."""
    if isinstance(value, Namespace | dict):
        items = value.items() if isinstance(value, dict) else vars(value).items()
        if "class_path" in value:
            _refuse_untrusted_class(value["class_path"], where)
        for key, item in items:
            refuse_untrusted_code(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            refuse_untrusted_code(item, f"{where}[{index}]")
    elif isinstance(value, type):
        _refuse_untrusted_class(f"{value.__module__}.{value.__qualname__}", where)
    elif callable(value) and not isinstance(value, ParsedPath):  # a path the parser read is data (callable: its text)
        function = value.func if isinstance(value, functools.partial) else value
        module = getattr(function, "__module__", None) or type(function).__module__
        name = getattr(function, "__qualname__", None) or type(function).__qualname__
        if not trusted(str(module)):
            raise UserInputError(untrusted_code(where, f"{module}.{name}"))


def untrusted_code(where: str, path: str) -> str:
    """The refusal of code (a function, a callable object) at ``path`` that a config names at ``where``."""
    return f"{where}: {path} is code, and a config names code only from modules you trust; {HOW_TO_TRUST}"


def untrusted_class(where: str, class_path: str) -> str:
    """The refusal of a class path outside :func:`_may_be_named` that a config names at ``where``."""
    if "__main__" in class_path.split("."):
        return f"{where}: {class_path} is in a __main__ module (a program, run when imported): a config never names one"
    return (
        f"{where}: {class_path} is not a class a config may name (those of torch, torchvision, torchmetrics, "
        f"lightning and this project, or of a module you trust); {HOW_TO_TRUST}"
    )


def _refuse_untrusted_class(class_path: Any, where: str) -> None:
    """Refuse a class path a config may not name (:func:`_may_be_named`), or one that names
    something other than a class. A short name (``RandomCrop``) is left to the option that looks it up among the
    classes it allows."""
    if not isinstance(class_path, str):
        raise UserInputError(f"{where}.class_path must be a class's import path, got {class_path!r}")
    module, _, name = class_path.rpartition(".")
    if not module:
        return
    found = getattr(sys.modules.get(module), name, None)
    found_in = str(getattr(found, "__module__", None) or type(found).__module__)
    if not _may_be_named(module) or (found is not None and not _may_be_named(found_in)):
        raise UserInputError(untrusted_class(where, class_path))
    if found is not None and not isinstance(found, type):
        raise UserInputError(f"{where}: {class_path} is not a class ({type(found).__name__}); name a class")

"""Presets: the YAML files under ``project/configs/`` that ``--config`` stacks, and the name a run gets from them.

``configs/`` holds ``base.yaml`` (the trainer, callbacks, network and optimizer: no data), every run's start, and
recipes (what to train: ``mnist.yaml``, the default, ``classic.yaml``, ``finetune_folder.yaml``, ...);
``configs/modifiers/`` holds presets that change how a run goes, stacked on any recipe (``debug.yaml``). A run is
named after its last recipe: ``logs/<recipe>/version_N``.

How they stack (:func:`default_configs`): ``base.yaml``, then ``mnist.yaml`` unless the run chooses a data class of
its own (a ``data`` class in a ``--config`` file, or ``--data`` / ``--data.class_path`` on the command line), then
the ``--config`` files in order, then the other options. A recipe for other data so never inherits MNIST's options
(jsonargparse would keep those the new class accepts, such as ``val_size: 5000``).
"""

from __future__ import annotations

from pathlib import Path

from project.errors import UserInputError
from project.files.yaml_text import read_yaml

CONFIG_DIR = Path(__file__).parents[1] / "configs"
_MODIFIER_DIR = CONFIG_DIR / "modifiers"
BASE_CONFIG = CONFIG_DIR / "base.yaml"
DEFAULT_CONFIG = CONFIG_DIR / "mnist.yaml"
"""The default recipe: its data, for a run that chooses none; its name, for a run that names no recipe."""
_DATA_CLASS_OPTIONS = ("--data", "--data.class_path")


def default_configs(args: list[str]) -> list[Path]:
    """The files every run of ``args`` starts from, before its ``--config`` files: ``base.yaml``, and the default
    recipe unless ``args`` choose a data class (:func:`_chooses_data_class`)."""
    return [BASE_CONFIG] if _chooses_data_class(args) else [BASE_CONFIG, DEFAULT_CONFIG]


def _chooses_data_class(args: list[str]) -> bool:
    """Whether ``args`` (with their ``--config`` names resolved) choose a data class: ``--data X``,
    ``--data.class_path X``, or a config file with a ``data`` class (``data: X`` or ``data: {class_path: X}``, at the
    top or in a subcommand's section)."""
    for arg in args:
        if arg in _DATA_CLASS_OPTIONS or arg.partition("=")[0] in _DATA_CLASS_OPTIONS:
            return True
    for config in config_files(args):
        content = read_yaml(Path(config).read_text(), config) if Path(config).is_file() else None
        sections = [content, *content.values()] if isinstance(content, dict) else []
        if any(isinstance(section, dict) and _names_data_class(section.get("data")) for section in sections):
            return True
    return False


def _names_data_class(data: object) -> bool:
    return isinstance(data, str) or (isinstance(data, dict) and "class_path" in data)


def config_files(args: list[str]) -> list[str]:
    """The values of ``--config`` / ``-c`` in ``args``, in order."""
    return [
        arg.removeprefix("--config=") if arg.startswith("--config=") else args[i + 1]
        for i, arg in enumerate(args)
        if arg.startswith("--config=") or (arg in ("-c", "--config") and i + 1 < len(args))
    ]


def resolve_config_args(args: list[str]) -> list[str]:
    """Let ``--config NAME`` name a preset in ``project/configs/`` (with or without ``.yaml``); refuse a config that
    does not exist or is not valid YAML, naming the file and the line."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg in ("-c", "--config") and i + 1 < len(resolved):
            resolved[i + 1] = checked_config(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + checked_config(arg.removeprefix("--config="))
    return resolved


def checked_config(name: str) -> str:
    candidates = [Path(name)] + [
        folder / file for folder in (CONFIG_DIR, _MODIFIER_DIR) for file in (name, f"{name}.yaml")
    ]
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        presets = ", ".join(sorted(p.stem for p in [*CONFIG_DIR.glob("*.yaml"), *_MODIFIER_DIR.glob("*.yaml")]))
        raise UserInputError(f"--config {name}: no such file, and no preset of that name ({presets})")
    read_yaml(path.read_text(), f"--config {path}")
    return str(path)


def run_name(args: list[str]) -> str:
    """The name of a run: its last ``--config`` that is a recipe (not a modifier preset, nor ``base.yaml``); else the
    name of the data class it chooses on the command line (``--data my_data.MyData``: ``MyData``); else the default
    recipe's (``mnist``)."""
    recipes = [
        Path(config)
        for config in config_files(args)
        if Path(config).resolve().parent != _MODIFIER_DIR.resolve() and Path(config).resolve() != BASE_CONFIG.resolve()
    ]
    if recipes:
        return recipes[-1].stem
    data_classes = [value for option, value in option_values(args) if option in _DATA_CLASS_OPTIONS]
    return data_classes[-1].rpartition(".")[2] if data_classes else DEFAULT_CONFIG.stem


def checked_folder_name(option: str, name: str | None) -> str | None:
    """``name`` (the value of ``option``: ``--run``, a sweep's ``--name``) when it can name one folder under
    ``logs/``: not blank, no ``/`` or ``\\``, not ``.`` or ``..``."""
    if name is not None and (not name.strip() or "/" in name or "\\" in name or name in (".", "..")):
        raise UserInputError(f"{option}: {name!r} is not a folder name (no '/', not '.' or '..'; e.g. lr-3e-3)")
    return name


def option_values(args: list[str]) -> list[tuple[str, str]]:
    """``(option, value)`` of each ``--option value`` or ``--option=value`` in ``args``."""
    pairs = []
    for i, arg in enumerate(args):
        option, equals, value = arg.partition("=")
        if equals:
            pairs.append((option, value))
        elif arg.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            pairs.append((arg, args[i + 1]))
    return pairs

"""Presets: the YAML files under ``project/configs/`` that ``--config`` stacks, and the name a run gets from them.

``configs/`` holds recipes (what to train: ``mnist.yaml``, the default every run starts from, ``classic.yaml``,
``finetune_folder.yaml``, ...); ``configs/modifiers/`` holds presets that change how a run goes, stacked on any
recipe (``debug.yaml``). A run is named after its last recipe: ``logs/<recipe>/version_N``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from project.errors import UserInputError, first_line

CONFIG_DIR = Path(__file__).parent / "configs"
MODIFIER_DIR = CONFIG_DIR / "modifiers"
DEFAULT_CONFIG = CONFIG_DIR / "mnist.yaml"


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
        folder / file for folder in (CONFIG_DIR, MODIFIER_DIR) for file in (name, f"{name}.yaml")
    ]
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        presets = ", ".join(sorted(p.stem for p in [*CONFIG_DIR.glob("*.yaml"), *MODIFIER_DIR.glob("*.yaml")]))
        raise UserInputError(f"--config {name}: no such file, and no preset of that name ({presets})")
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise UserInputError(f"--config {path}: not valid YAML{where}: {problem}") from None
    return str(path)


def run_name(args: list[str]) -> str:
    """The name of a run: its last ``--config`` that is a recipe (not a modifier preset), else the default's."""
    configs = [
        arg.removeprefix("--config=") if arg.startswith("--config=") else args[i + 1]
        for i, arg in enumerate(args)
        if arg.startswith("--config=") or (arg in ("-c", "--config") and i + 1 < len(args))
    ]
    recipes = [Path(config) for config in configs if Path(config).resolve().parent != MODIFIER_DIR.resolve()]
    return recipes[-1].stem if recipes else DEFAULT_CONFIG.stem

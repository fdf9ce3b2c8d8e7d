"""What the command line does with its arguments before its parser reads them: the modules you trust are imported
(``--trust``, and the clone's ``pyproject.toml``: :mod:`project.trusted`), ``--config`` names are resolved to files
(:mod:`project.cli.presets`), the ``model.task_options`` of stacked configs are merged (:func:`merged_task_options`),
and every YAML text the parser reads is bounded (:mod:`project.files.yaml_text`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader
from lightning.pytorch.cli import LightningArgumentParser

from project.cli.presets import resolve_config_args
from project.files.yaml_text import bounded_loader, read_yaml
from project.trusted import take_trust_options, trust, trust_declared

YAML_LOADER = get_loader("yaml")
"""jsonargparse's own YAML loader, which reads config files and option values, here within bounds."""


class WholeOptionsParser(LightningArgumentParser):
    """The command line's parser, which never takes an abbreviated option for a whole one (``--model.lr`` is not
    ``--model.lr_schedule``); jsonargparse makes the parsers of the classes a config names of the same type, so an
    option of a piece of such a class (``--data.split.val_siz``) is refused too, not taken for ``val_size``."""

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)


def prepared_arguments(args: list[str]) -> list[str]:
    """``args`` without ``--trust`` (its modules imported and trusted), their ``--config`` names resolved; the
    parser's YAML loader bounded."""
    modules, args = take_trust_options(args)
    trust_declared()
    trust(*modules)  # before parsing: the parser imports the classes a config names, to check them
    set_loader("yaml", bounded_loader(YAML_LOADER), (yaml.YAMLError,))
    return merged_task_options(resolve_config_args(args))


def merged_task_options(args: list[str]) -> list[str]:
    """``args`` (their ``--config`` names resolved) with the ``model.task_options`` of every config file that sets
    them merged, in order (later keys win; ``metrics`` merged by name), given right after the last of those files.

    The parser would let a later config's mapping replace an earlier one's whole (``--config label_smoothing
    --config my_metrics.yaml`` would lose the smoothing), while presets are made to stack; options on the command
    line (``--model.task_options.label_smoothing 0.2``) already add to a config's."""
    setting = [(index, options) for index, options in task_options_by_config(args) if options is not None]
    if len(setting) < 2:
        return args
    merged: dict[str, Any] = {}
    for _, options in setting:
        metrics = {**(merged.get("metrics") or {}), **(options.get("metrics") or {})}
        merged.update(options)
        if metrics:
            merged["metrics"] = metrics
    last = setting[-1][0]
    return [*args[: last + 1], f"--model.task_options={json.dumps(merged)}", *args[last + 1 :]]


def task_options_by_config(args: list[str]) -> list[tuple[int, dict[str, Any] | None]]:
    """For each ``--config`` file in ``args``: the index of its last argument, and the ``model.task_options`` it sets
    (a mapping; ``None`` when it sets none, or something the parser will refuse)."""
    found = []
    for index, arg in enumerate(args):
        if arg.startswith("--config="):
            path = arg.removeprefix("--config=")
        elif arg in ("-c", "--config") and index + 1 < len(args):
            path, index = args[index + 1], index + 1
        else:
            continue
        content = read_yaml(Path(path).read_text(), f"--config {path}") if Path(path).is_file() else None
        model = content.get("model") if isinstance(content, dict) else None
        options = model.get("task_options") if isinstance(model, dict) else None
        metrics = options.get("metrics") if isinstance(options, dict) else None
        plain = isinstance(options, dict) and (metrics is None or isinstance(metrics, dict))
        found.append((index, options if plain else None))
    return found

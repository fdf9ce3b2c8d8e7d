"""What LightningCLI's subcommands do with their arguments before its parser reads them: the subcommand is checked to
be one of them, the modules you trust are imported (``--trust``, and the clone's ``pyproject.toml``:
:mod:`project.trusted`), ``--config`` names are resolved to files (:mod:`project.cli.presets`), and every YAML text
the parser reads is bounded (:mod:`project.files.yaml_text`)."""

from __future__ import annotations

from typing import Any

import yaml
from jsonargparse import get_loader, set_loader
from lightning.pytorch.cli import LightningArgumentParser

from project.cli.commands import refuse_unknown_subcommand
from project.cli.presets import resolve_config_args
from project.cli.refusals import SUBCOMMANDS
from project.files.yaml_text import bounded_loader
from project.trusted import guard_parser_imports, take_trust_options, trust, trust_declared

_YAML_LOADER = get_loader("yaml")
"""jsonargparse's own YAML loader, which reads config files and option values, here within bounds."""


class WholeOptionsParser(LightningArgumentParser):
    """The command line's parser, which never takes an abbreviated option for a whole one (``--model.task.label`` is not
    ``--model.task.label_smoothing``); jsonargparse makes the parsers of the classes a config names of the same type,
    so an option of a piece of such a class (``--data.split.val_siz``) is refused too, not taken for ``val_size``."""

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)


def prepared_arguments(args: list[str]) -> list[str]:
    """``args`` without ``--trust`` (its modules imported and trusted), their ``--config`` names resolved; the
    parser's YAML loader bounded. A subcommand other than ``fit``, ``validate`` and ``test`` is refused."""
    refuse_unknown_subcommand(args[0] if args else "", SUBCOMMANDS)
    modules, args = take_trust_options(args)
    trust_declared()
    trust(*modules)  # before parsing: the parser imports the classes a config names, to check them
    guard_parser_imports()  # ... and only those of the libraries and of the modules trusted
    set_loader("yaml", bounded_loader(_YAML_LOADER), (yaml.YAMLError,))
    return resolve_config_args(args)

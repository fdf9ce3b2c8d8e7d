"""What LightningCLI's subcommands do with their arguments before its parser reads them: the subcommand is checked to
be one of them, the modules you trust are imported (``--trust``, and the clone's ``pyproject.toml``:
:mod:`project.trusted`), ``--config`` names are resolved to files (:mod:`project.cli.presets`), and every YAML text
the parser reads is bounded (:mod:`project.files.yaml_text`); the project's own options beside the classes'."""

from __future__ import annotations

from typing import Any

import yaml
from jsonargparse import get_loader, set_loader
from lightning.pytorch.cli import LightningArgumentParser

from project.cli.commands import refuse_unknown_subcommand
from project.cli.presets import default_configs, resolve_config_args
from project.cli.refusals import SUBCOMMANDS
from project.files.yaml_text import bounded_loader
from project.trusted import guard_parser_imports, take_trust_options, trust, trust_declared

_CKPT_PATH_HELP = (
    "the checkpoint to resume (fit) or evaluate: 'last' (the newest run of this recipe, logs/<name>/version_*; fit "
    "refuses it while another process trains into it, validate and test pass over runs still training), 'best' "
    "(that run's best checkpoint), 'hpc' (the newest hpc_ckpt_<N>.ckpt of Lightning's SLURM requeue), 'auto' "
    "(fit: the newer of last and hpc, or a new run when there is neither), or the path of a .ckpt file"
)
_RUN_HELP = (
    "the run's name: it trains into logs/NAME/version_N, and --ckpt_path last, best and auto look only there "
    "(default: the name of the last recipe preset, e.g. mnist, or of the data class)"
)
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


def add_project_options(parser: LightningArgumentParser) -> None:
    """The options every subcommand of LightningCLI takes beside the classes' own: ``--ckpt_path`` (the project's,
    resolved before anything is built), ``--run`` and ``--test_after_fit``."""
    parser.add_argument("--ckpt_path", type=str | None, default=None, help=_CKPT_PATH_HELP)
    parser.add_argument("--run", type=str | None, default=None, help=_RUN_HELP)
    parser.add_argument(
        "--test_after_fit",
        type=bool,
        default=True,
        help="fit only: after training, test the best checkpoint (by the monitored metric) on the test split",
    )


def preset_defaults(args: list[str]) -> tuple[list[str], list[str]]:
    """``args``, and the presets every run starts from (:func:`~project.cli.presets.default_configs`), given to the
    parser as its default config files. With ``--print_config=skip_default`` they are given as ``--config`` files
    instead: jsonargparse counts default config files as defaults, and would print ``{}``."""
    defaults = [str(path) for path in default_configs(args)]
    flags = [arg.partition("=")[2] for arg in args if arg.startswith("--print_config=")]  # its only spelling
    subcommand = next((i for i, arg in enumerate(args) if arg in SUBCOMMANDS), None)
    if subcommand is None or not any("skip_default" in flag for flag in flags):
        return args, defaults
    presets = [item for path in defaults for item in ("--config", path)]
    return [*args[: subcommand + 1], *presets, *args[subcommand + 1 :]], []

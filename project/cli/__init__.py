"""The command line, ``python -m project``: LightningCLI's ``fit``, ``validate``, ``test`` and ``scripts/train.py``
(:mod:`project.cli.app`), the other subcommands and the command's help (:mod:`project.cli.commands`), the presets
(:mod:`project.cli.presets`), the checks before a run writes a file (:mod:`project.cli.preflight`) and every refusal
in one line (:mod:`project.cli.refusals`).

:mod:`project.cli.app` (and with it Lightning) is imported when one of its names is first used, not with this
package: ``python -m project evaluate --help`` and the refusal of a bad option answer without loading Lightning.
"""

import os
import sys
from typing import Any

__all__ = ["ProjectCLI", "main", "run_cli"]
_HELP = ("-h", "--help")


def starting(name: str, args: list[str], doing: str) -> None:
    """Say at once what the command is doing while it imports for seconds (``fit: loading Lightning and building the
    run ...``): not for ``--help`` or ``--print_config`` (which print only what was asked), nor in the other processes
    of a multi-process run."""
    if any(arg.partition("=")[0] in (*_HELP, "--print_config") for arg in args):
        return
    if any(os.environ.get(rank, "0") != "0" for rank in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")):
        return
    print(f"{name}: {doing} ...", flush=True)


def train_main() -> None:
    """``project-train`` and ``scripts/train.py``: say at once what the command does, then fit and test the best
    checkpoint (:func:`project.cli.app.train_main`)."""
    starting("fit", sys.argv[1:], "loading Lightning and building the run")
    from project.cli import app

    app.train_main()


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'project.cli' has no attribute {name!r}")
    from project.cli import app

    return getattr(app, name)

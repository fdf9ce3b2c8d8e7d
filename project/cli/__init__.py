"""The command line, ``python -m project``: LightningCLI's ``fit``, ``validate``, ``test`` and ``scripts/train.py``
(:mod:`project.cli.app`), the other subcommands and the command's help (:mod:`project.cli.commands`), the presets
(:mod:`project.cli.presets`), the checks before a run writes a file (:mod:`project.cli.preflight`) and every refusal
in one line (:mod:`project.cli.refusals`).

:mod:`project.cli.app` (and with it Lightning) is imported when one of its names is first used, not with this
package: ``python -m project evaluate --help`` and the refusal of a bad option answer without loading Lightning.
"""

from typing import Any

__all__ = ["ProjectCLI", "main", "run_cli", "train_main"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'project.cli' has no attribute {name!r}")
    from project.cli import app

    return getattr(app, name)

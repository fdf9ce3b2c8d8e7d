"""The command line: ``python -m project`` and ``scripts/train.py`` (:mod:`project.cli.app`), the presets
(:mod:`project.cli.presets`), the checks before a run writes a file (:mod:`project.cli.preflight`) and every refusal
in one line (:mod:`project.cli.refusals`)."""

from project.cli.app import ProjectCLI, main, run_cli, train_main

__all__ = ["ProjectCLI", "main", "run_cli", "train_main"]

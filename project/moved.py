"""Modules that moved when the package took folders (2026-12), kept importable under their old names.

Checkpoints, run configs (``config.yaml``) and users' own code written before the move name classes such as
``project.tensorboard_reports.RunLogger`` or ``project.task_module.TaskModule``. :class:`MovedModules` makes
``import project.task_module`` give the module's new home itself (the same module object, so ``isinstance`` and the
allow-lists hold), and :func:`current_path` translates a class path for the allow-lists, which import nothing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

MOVED = {
    "project.atomic_files": "project.files.atomic",
    "project.weight_files": "project.files.weights",
    "project.library_networks": "project.networks.library",
    "project.lora": "project.networks.lora",
    "project.figures": "project.reports.figures",
    "project.tensorboard_reports": "project.reports.tensorboard",
    "project.divergence": "project.training.divergence",
    "project.finetuning": "project.training.finetuning",
    "project.specs": "project.training.specs",
    "project.task_module": "project.training.task_module",
    "project.resume": "project.training.resume",
    "project.checkpoints": "project.training.checkpoints",
    "project.runs": "project.training.runs",
    "project.run_lock": "project.training.run_lock",
    "project.progress": "project.training.progress",
    "project.evaluation": "project.inference.evaluation",
    "project.prediction": "project.inference.prediction",
    "project.export": "project.inference.export",
    "project.cli_errors": "project.cli.refusals",
    "project.presets": "project.cli.presets",
    "project.preflight": "project.cli.preflight",
}
"""Old module name -> its home now. (``project.networks`` and ``project.cli`` became packages that re-export what
the modules held.)"""


def current_path(class_path: str) -> str:
    """``class_path`` with a moved module's old name replaced by its home now."""
    module, _, name = class_path.rpartition(".")
    return f"{MOVED[module]}.{name}" if module in MOVED else class_path


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names of :data:`MOVED` (and nothing else): importing one imports the new home, which then
    stands in ``sys.modules`` under both names."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module, replaced in exec_module

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns what sys.modules holds after loading: "a module can replace itself"
        # (https://docs.python.org/3/reference/import.html#loading).
        # Only the fixed homes of MOVED are imported (find_spec answers nothing else): the table is the allow-list.
        sys.modules[module.__name__] = importlib.import_module(MOVED[module.__name__])


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())

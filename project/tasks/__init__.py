"""Tasks: what a network's outputs mean, and everything that follows from it.

A task turns outputs into a loss, into scores (what the metrics take) and into decisions (the predicted labels or
values); it names its metrics, the one that picks the best checkpoint, and how to report a whole split. The training
module, the TensorBoard reports, the evaluation reports and prediction all go through it.

Every module of this package defines one task (a :class:`Task` subclass with a ``name``); they are found here, so
adding a task is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from project.errors import UserInputError
from project.tasks.base import MetricResolver, Task, TaskOption

for _module in pkgutil.iter_modules(__path__):  # this package's own files: no name comes from input
    importlib.import_module(f"{__name__}.{_module.name}")

TASK_NAMES = tuple(sorted(Task.registry))


def make_task(
    name: str, num_outputs: int, options: Mapping[str, Any] | None = None, resolve: MetricResolver | None = None
) -> Task:
    """The task called ``name`` for a network with ``num_outputs`` outputs and its ``options``
    (``--model.task_options``; ``resolve`` turns the class paths of extra metrics into classes); refused if any of
    them does not fit."""
    if name not in Task.registry:
        raise UserInputError(f"model.task must be one of {', '.join(TASK_NAMES)}, got {name!r}")
    return Task.registry[name](num_outputs, options, resolve)


__all__ = ["TASK_NAMES", "MetricResolver", "Task", "TaskOption", "make_task"]

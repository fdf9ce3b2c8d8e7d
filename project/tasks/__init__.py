"""Tasks: what a network's outputs mean, and everything that follows from it.

A task turns outputs into a loss, into scores (what the metrics take) and into decisions (the predicted labels or
values); it names its metrics, the one that picks the best checkpoint, and how to report a whole split. The training
module, the TensorBoard reports, the evaluation reports and prediction all go through it.

The data says which kind of targets it has (its ``task``: ``multiclass``, ``binary``, ``multilabel``,
``regression``; raw text for pretraining: ``masked_tokens``); a run takes the project's task of that name
(:data:`TASKS`) unless its config names another for targets of that kind: ``--model.task Multiclass
--model.task.label_smoothing 0.1``, or a class of your own (``--model.task my_losses.FocalLoss --trust
my_losses``, ``examples/focal_loss/``).
"""

from project.tasks.base import OneOutputTask, Task
from project.tasks.binary import Binary
from project.tasks.extra_metrics import MetricResolver
from project.tasks.masked_tokens import MaskedTokens
from project.tasks.multiclass import Multiclass
from project.tasks.multilabel import Multilabel
from project.tasks.regression import Regression

TASKS: dict[str, type[Task]] = {task.name: task for task in (Multiclass, Binary, Multilabel, Regression, MaskedTokens)}
"""The project's task for each kind of targets, by name: the one a run takes when its config names none."""

__all__ = [
    "TASKS",
    "Binary",
    "MaskedTokens",
    "MetricResolver",
    "Multiclass",
    "Multilabel",
    "OneOutputTask",
    "Regression",
    "Task",
]

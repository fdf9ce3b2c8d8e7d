"""One class out of several: cross-entropy on the logits; accuracy and macro precision, recall and F1."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from project.tasks.base import Task, per_class_rows


class Multiclass(Task):
    name = "multiclass"
    monitor = ("val/acc", "max")
    summary = ("acc", "f1")

    @classmethod
    def outputs_for(cls, num_classes: int) -> int:
        return max(num_classes, 2)

    @classmethod
    def outputs_rule(cls) -> str:
        return "one output per class (2 or more)"

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs

    def decisions(self, outputs: Tensor) -> Tensor:
        return outputs.argmax(dim=1)

    def metrics(self) -> MetricCollection:
        classes = self.num_outputs
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(classes, average="micro"),
                "precision": MulticlassPrecision(classes, average="macro"),
                "recall": MulticlassRecall(classes, average="macro"),
                "f1": MulticlassF1Score(classes, average="macro"),
            }
        )

    def confusion_matrix(self) -> Metric:
        return MulticlassConfusionMatrix(self.num_outputs)

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        return class_names[int(value)]

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        return self.decisions_with_probabilities(outputs, class_names, class_names, outputs.float().softmax(dim=1))

    def report(self, scores: Tensor, targets: Tensor, class_names: list[str]) -> dict[str, Any]:
        classes = self.num_outputs
        confusion = multiclass_confusion_matrix(scores, targets, classes)
        per_class = {
            "precision": multiclass_precision(scores, targets, classes, average=None),
            "recall": multiclass_recall(scores, targets, classes, average=None),
            "f1": multiclass_f1_score(scores, targets, classes, average=None),
        }
        return {
            "overall": {
                "accuracy": multiclass_accuracy(scores, targets, classes, average="micro").item(),
                "precision": multiclass_precision(scores, targets, classes, average="macro").item(),
                "recall": multiclass_recall(scores, targets, classes, average="macro").item(),
                "f1": multiclass_f1_score(scores, targets, classes, average="macro").item(),
            },
            "per_class": per_class_rows(class_names, per_class, confusion.sum(dim=1)),
            "confusion_matrix": confusion.tolist(),
        }

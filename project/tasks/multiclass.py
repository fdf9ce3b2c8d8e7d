"""One class out of several: cross-entropy on the logits (with label smoothing and class weights as options), against
class indices or, for batches mixed by MixUp / CutMix, class probabilities (torch's cross-entropy takes both);
accuracy and macro precision, recall and F1."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
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

from project.plain import PlainData
from project.tasks.base import Task, checked_number, per_class_rows, positive_list


class Multiclass(Task):
    """One class out of several: cross-entropy on the logits.

    Args:
        label_smoothing: the share of each target spread evenly over every class (cross-entropy's), in [0, 1).
        class_weights: each class's weight in the loss (cross-entropy's): positive floats, one per class.
        metrics: extra metrics (:class:`~project.tasks.base.Task`).
    """

    name = "multiclass"
    monitor = ("val/acc", "max")
    summary = ("acc", "f1")
    outputs_meaning = "logits, one per class: softmax for probabilities"

    def __init__(
        self,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        metrics: dict[str, PlainData] | None = None,
    ) -> None:
        super().__init__(metrics)
        fits = 0 <= label_smoothing < 1
        self.label_smoothing = checked_number("label_smoothing", label_smoothing, "a float in [0, 1)", fits)
        self.class_weights = class_weights
        self.weight: Tensor | None = None

    def check_outputs(self) -> None:
        if self.class_weights is not None:
            self.weight = positive_list("class_weights", self.class_weights, self.num_outputs, "class")

    def metric_defaults(self) -> dict[str, Any]:
        return {"num_classes": self.num_outputs}

    def example_targets(self) -> Tensor:
        return torch.arange(self.num_outputs)

    @classmethod
    def outputs_for(cls, num_classes: int) -> int:
        return max(num_classes, 2)

    @classmethod
    def outputs_rule(cls) -> str:
        return "one output per class (2 or more)"

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy with the options, as torch computes it: with class weights, the sum of
        :meth:`example_losses` (each already weighted by its class) over the sum of the examples' classes' weights."""
        return self.cross_entropy(outputs, targets, "mean")

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.cross_entropy(outputs, targets, "none")

    def cross_entropy(self, outputs: Tensor, targets: Tensor, reduction: str) -> Tensor:
        weight = self.on_device_of(self.weight, outputs)
        if weight is not None and reduction == "mean" and targets.is_floating_point():
            # Class probabilities (MixUp / CutMix): divided by the examples' weights, as torch does for class indices
            # (not by their number), so one-hot probabilities give the class-index loss exactly (docs/design_notes.md).
            losses = self.cross_entropy(outputs, targets, "none")
            return losses.sum() / (targets.to(weight.dtype) @ weight).sum()
        return F.cross_entropy(
            outputs, targets, weight=weight, reduction=reduction, label_smoothing=self.label_smoothing
        )

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs

    def decisions(self, outputs: Tensor) -> Tensor:
        return outputs.argmax(dim=1)

    def metric_targets(self, targets: Tensor) -> Tensor:
        """Class indices; mixed training targets (MixUp / CutMix: probabilities, one row per example) count as the
        class with the largest share."""
        return targets.argmax(dim=1) if targets.ndim == 2 else targets

    def own_metrics(self) -> dict[str, Metric]:
        classes = self.num_outputs
        return {
            "acc": MulticlassAccuracy(classes, average="micro"),
            "precision": MulticlassPrecision(classes, average="macro"),
            "recall": MulticlassRecall(classes, average="macro"),
            "f1": MulticlassF1Score(classes, average="macro"),
        }

    def confusion_matrix(self) -> Metric:
        return MulticlassConfusionMatrix(self.num_outputs)

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        return class_names[int(value)]

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        return self.decisions_with_probabilities(outputs, class_names, class_names, outputs.double().softmax(dim=1))

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

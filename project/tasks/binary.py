"""Yes or no: one output, binary cross-entropy on its logit (with a weight for positives and a decision threshold as
options); accuracy, precision, recall, F1 (and AUROC in reports)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryConfusionMatrix,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_confusion_matrix,
    binary_f1_score,
    binary_precision,
    binary_recall,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from project.plain import PlainData
from project.tasks.base import OneOutputTask, checked_number, checked_threshold, logit, per_class_rows


class Binary(OneOutputTask):
    """Yes or no: one output, binary cross-entropy on its logit.

    Args:
        pos_weight: the weight of positive examples in the loss (BCE-with-logits' ``pos_weight``): a positive float.
        threshold: the probability above which an image is decided positive (decisions, prediction rows and the
            thresholded metrics), in (0, 1).
        metrics: extra metrics (:class:`~project.tasks.base.Task`).
    """

    name = "binary"
    monitor = ("val/acc", "max")
    summary = ("acc", "f1")
    outputs_meaning = "one logit: sigmoid for the probability of the positive class"

    def __init__(
        self, pos_weight: float | None = None, threshold: float = 0.5, metrics: dict[str, PlainData] | None = None
    ) -> None:
        super().__init__(metrics)
        if pos_weight is not None:
            checked_number("pos_weight", pos_weight, "a positive float", pos_weight > 0)
        self.pos_weight = pos_weight
        self.threshold = checked_threshold(threshold)
        self.weight = torch.tensor(pos_weight) if pos_weight is not None else None

    def metric_defaults(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def example_targets(self) -> Tensor:
        return torch.tensor([0, 1])

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        weight = self.on_device_of(self.weight, outputs)
        return F.binary_cross_entropy_with_logits(outputs[:, 0], targets.float(), pos_weight=weight, reduction="none")

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs[:, 0].sigmoid()

    def decisions(self, outputs: Tensor) -> Tensor:
        return (outputs[:, 0] > logit(self.threshold)).long()

    def own_metrics(self) -> dict[str, Metric]:
        threshold = self.threshold
        return {
            "acc": BinaryAccuracy(threshold),
            "precision": BinaryPrecision(threshold),
            "recall": BinaryRecall(threshold),
            "f1": BinaryF1Score(threshold),
        }

    def confusion_matrix(self) -> Metric:
        return BinaryConfusionMatrix()

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        return class_names[int(value)]

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        positive = class_names[1:2]  # one column: the probability of the positive class
        return self.decisions_with_probabilities(outputs, class_names, positive, outputs[:, :1].double().sigmoid())

    def report(self, scores: Tensor, targets: Tensor, class_names: list[str]) -> dict[str, Any]:
        threshold = self.threshold
        decisions = (scores > threshold).long()  # as torchmetrics decides
        confusion = binary_confusion_matrix(scores, targets, threshold)
        per_class = {
            "precision": multiclass_precision(decisions, targets, 2, average=None),
            "recall": multiclass_recall(decisions, targets, 2, average=None),
            "f1": multiclass_f1_score(decisions, targets, 2, average=None),
        }
        return {
            "overall": {
                "accuracy": binary_accuracy(scores, targets, threshold).item(),
                "precision": binary_precision(scores, targets, threshold).item(),
                "recall": binary_recall(scores, targets, threshold).item(),
                "f1": binary_f1_score(scores, targets, threshold).item(),
                "auroc": binary_auroc(scores, targets).item(),
            },
            "per_class": per_class_rows(class_names, per_class, confusion.sum(dim=1)),
            "confusion_matrix": confusion.tolist(),
        }

"""Yes or no: one output, binary cross-entropy on its logit; accuracy, precision, recall, F1 (and AUROC in reports)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection
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

from project.tasks.base import OneOutputTask, per_class_rows


class Binary(OneOutputTask):
    name = "binary"
    monitor = ("val/acc", "max")
    summary = ("acc", "f1")

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(outputs[:, 0], targets.float(), reduction="none")

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs[:, 0].sigmoid()

    def decisions(self, outputs: Tensor) -> Tensor:
        return (outputs[:, 0] > 0).long()

    def metrics(self) -> MetricCollection:
        return MetricCollection(
            {"acc": BinaryAccuracy(), "precision": BinaryPrecision(), "recall": BinaryRecall(), "f1": BinaryF1Score()}
        )

    def confusion_matrix(self) -> Metric:
        return BinaryConfusionMatrix()

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        return class_names[int(value)]

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        positive = class_names[1:2]  # one column: the probability of the positive class
        return self.decisions_with_probabilities(outputs, class_names, positive, outputs[:, :1].float().sigmoid())

    def report(self, scores: Tensor, targets: Tensor, class_names: list[str]) -> dict[str, Any]:
        decisions = (scores >= 0.5).long()
        confusion = binary_confusion_matrix(scores, targets)
        per_class = {
            "precision": multiclass_precision(decisions, targets, 2, average=None),
            "recall": multiclass_recall(decisions, targets, 2, average=None),
            "f1": multiclass_f1_score(decisions, targets, 2, average=None),
        }
        return {
            "overall": {
                "accuracy": binary_accuracy(scores, targets).item(),
                "precision": binary_precision(scores, targets).item(),
                "recall": binary_recall(scores, targets).item(),
                "f1": binary_f1_score(scores, targets).item(),
                "auroc": binary_auroc(scores, targets).item(),
            },
            "per_class": per_class_rows(class_names, per_class, confusion.sum(dim=1)),
            "confusion_matrix": confusion.tolist(),
        }

"""Several independent yes/no labels per image: one output per label, binary cross-entropy on each logit; accuracy,
precision, recall and F1 per label and their macro means, and mean average precision (``map``, threshold-free)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelF1Score,
    MultilabelPrecision,
    MultilabelRecall,
)
from torchmetrics.functional.classification import (
    multilabel_accuracy,
    multilabel_average_precision,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

from project.tasks.base import Task, per_class_rows


class Multilabel(Task):
    name = "multilabel"
    monitor = ("val/map", "max")
    summary = ("f1", "map")

    @classmethod
    def outputs_for(cls, num_classes: int) -> int:
        return num_classes

    @classmethod
    def outputs_rule(cls) -> str:
        return "one output per label"

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(outputs, targets.float(), reduction="none").mean(dim=1)

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs.sigmoid()

    def decisions(self, outputs: Tensor) -> Tensor:
        return (outputs > 0).long()

    def metrics(self) -> MetricCollection:
        labels = self.num_outputs
        return MetricCollection(
            {
                "acc": MultilabelAccuracy(labels, average="macro"),
                "precision": MultilabelPrecision(labels, average="macro"),
                "recall": MultilabelRecall(labels, average="macro"),
                "f1": MultilabelF1Score(labels, average="macro"),
                "map": MultilabelAveragePrecision(labels, average="macro"),
            }
        )

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        present = [name for name, flag in zip(class_names, value.tolist(), strict=True) if flag]
        return ",".join(present) or "none"

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        return self.decisions_with_probabilities(outputs, class_names, class_names, outputs.float().sigmoid())

    def report(self, scores: Tensor, targets: Tensor, class_names: list[str]) -> dict[str, Any]:
        labels, targets = self.num_outputs, targets.long()
        per_label = {
            "precision": multilabel_precision(scores, targets, labels, average=None),
            "recall": multilabel_recall(scores, targets, labels, average=None),
            "f1": multilabel_f1_score(scores, targets, labels, average=None),
            "average_precision": multilabel_average_precision(scores, targets, labels, average=None),
        }
        return {
            "overall": {
                "accuracy": multilabel_accuracy(scores, targets, labels, average="macro").item(),
                "precision": multilabel_precision(scores, targets, labels, average="macro").item(),
                "recall": multilabel_recall(scores, targets, labels, average="macro").item(),
                "f1": multilabel_f1_score(scores, targets, labels, average="macro").item(),
                "map": multilabel_average_precision(scores, targets, labels, average="macro").item(),
            },
            "per_class": per_class_rows(class_names, per_label, targets.sum(dim=0)),
        }

"""Several independent yes/no labels per image: one output per label, binary cross-entropy on each logit; accuracy,
precision, recall and F1 per label and their macro means, and mean average precision (``map``, threshold-free).
Options: a weight for positives (one, or one per label) and the decision threshold."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
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

from project.plain import PlainData
from project.tasks.base import Task, checked_number, checked_threshold, logit, per_class_rows, positive_list


class Multilabel(Task):
    """Several independent yes/no labels: one output per label, binary cross-entropy on each logit.

    Args:
        pos_weight: the weight of positive examples in the loss (BCE-with-logits' ``pos_weight``): a positive float,
            or a list of them, one per label.
        threshold: the probability above which a label is decided present, in (0, 1).
        metrics: extra metrics (:class:`~project.tasks.base.Task`).
    """

    name = "multilabel"
    monitor = ("val/map", "max")
    summary = ("f1", "map")
    outputs_meaning = "one logit per label: sigmoid for each label's probability"

    def __init__(
        self,
        pos_weight: float | list[float] | None = None,
        threshold: float = 0.5,
        metrics: dict[str, PlainData] | None = None,
    ) -> None:
        super().__init__(metrics)
        if isinstance(pos_weight, int | float):
            checked_number("pos_weight", pos_weight, "a positive float, or one per label", pos_weight > 0)
        self.pos_weight = pos_weight
        self.threshold = checked_threshold(threshold)
        self.weight = torch.tensor(float(pos_weight)) if isinstance(pos_weight, int | float) else None

    def check_outputs(self) -> None:
        if isinstance(self.pos_weight, list):
            self.weight = positive_list("pos_weight", self.pos_weight, self.num_outputs, "label")

    def metric_defaults(self) -> dict[str, Any]:
        return {"num_labels": self.num_outputs, "threshold": self.threshold}

    def example_targets(self) -> Tensor:
        labels = self.num_outputs
        return torch.cat([torch.eye(labels, dtype=torch.long), torch.zeros(1, labels, dtype=torch.long)])

    @classmethod
    def outputs_for(cls, num_classes: int) -> int:
        return num_classes

    @classmethod
    def outputs_rule(cls) -> str:
        return "one output per label"

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        weight = self.on_device_of(self.weight, outputs)
        losses = F.binary_cross_entropy_with_logits(outputs, targets.float(), pos_weight=weight, reduction="none")
        return losses.mean(dim=1)

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs.sigmoid()

    def decisions(self, outputs: Tensor) -> Tensor:
        return (outputs > logit(self.threshold)).long()

    def own_metrics(self) -> dict[str, Metric]:
        labels, threshold = self.num_outputs, self.threshold
        return {
            "acc": MultilabelAccuracy(labels, threshold, average="macro"),
            "precision": MultilabelPrecision(labels, threshold, average="macro"),
            "recall": MultilabelRecall(labels, threshold, average="macro"),
            "f1": MultilabelF1Score(labels, threshold, average="macro"),
            "map": MultilabelAveragePrecision(labels, average="macro"),
        }

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        present = [name for name, flag in zip(class_names, value.tolist(), strict=True) if flag]
        return ",".join(present) or "none"

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        return self.decisions_with_probabilities(outputs, class_names, class_names, outputs.double().sigmoid())

    def report(self, scores: Tensor, targets: Tensor, class_names: list[str]) -> dict[str, Any]:
        labels, targets, threshold = self.num_outputs, targets.long(), self.threshold
        per_label = {
            "precision": multilabel_precision(scores, targets, labels, threshold, average=None),
            "recall": multilabel_recall(scores, targets, labels, threshold, average=None),
            "f1": multilabel_f1_score(scores, targets, labels, threshold, average=None),
            "average_precision": multilabel_average_precision(scores, targets, labels, average=None),
        }
        return {
            "overall": {
                "accuracy": multilabel_accuracy(scores, targets, labels, threshold, average="macro").item(),
                "precision": multilabel_precision(scores, targets, labels, threshold, average="macro").item(),
                "recall": multilabel_recall(scores, targets, labels, threshold, average="macro").item(),
                "f1": multilabel_f1_score(scores, targets, labels, threshold, average="macro").item(),
                "map": multilabel_average_precision(scores, targets, labels, average="macro").item(),
            },
            "per_class": per_class_rows(class_names, per_label, targets.sum(dim=0)),
        }

"""Several independent yes/no labels per image: one output per label, binary cross-entropy on each logit; accuracy,
precision, recall and F1 per label and their macro means, and mean average precision (``map``, threshold-free).
Options: a weight for positives (one, or one per label) and the decision threshold."""

from __future__ import annotations

from typing import Any, ClassVar

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

from project.tasks.base import (
    THRESHOLD,
    Task,
    TaskOption,
    logit,
    number_option,
    per_class_rows,
    positive_floats,
    threshold_option,
)

POS_WEIGHT = "a positive float, or a list of positive floats (one per label)"


class Multilabel(Task):
    name = "multilabel"
    monitor = ("val/map", "max")
    summary = ("f1", "map")
    outputs_meaning = "one logit per label: sigmoid for each label's probability"
    options: ClassVar[dict[str, TaskOption]] = {
        **Task.options,
        "pos_weight": TaskOption(
            None, POS_WEIGHT, "the weight of positive examples in the loss (BCE-with-logits' pos_weight)"
        ),
        "threshold": THRESHOLD,
    }

    def configure(self, options: dict[str, Any]) -> None:
        weight = options["pos_weight"]
        if isinstance(weight, list):
            weight = torch.tensor(positive_floats("pos_weight", weight, self.num_outputs, "label"))
        elif weight is not None:
            weight = torch.tensor(number_option("pos_weight", weight, POS_WEIGHT, lambda v: v > 0))
        self.pos_weight: Tensor | None = weight
        self.threshold = threshold_option(options["threshold"])

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
        weight = self.on_device_of(self.pos_weight, outputs)
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
        return self.decisions_with_probabilities(outputs, class_names, class_names, outputs.float().sigmoid())

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

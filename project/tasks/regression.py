"""A number: one output, mean squared error; MSE and MAE (and R² in reports)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric
from torchmetrics.functional.regression import mean_absolute_error, mean_squared_error, r2_score

from project.tasks.base import OneOutputTask


class Regression(OneOutputTask):
    """A number: one output, mean squared error.

    Args:
        metrics: extra metrics (:class:`~project.tasks.base.Task`).
    """

    name = "regression"
    monitor = ("val/loss", "min")
    summary = ("mse", "mae")
    outputs_meaning = "the predicted value"

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs[:, 0], targets.float(), reduction="none")

    def example_targets(self) -> Tensor:
        return torch.tensor([-1.0, 0.5, 2.0])

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs[:, 0]

    def decisions(self, outputs: Tensor) -> Tensor:
        return outputs[:, 0]

    def own_metrics(self) -> dict[str, Metric]:
        return {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        return f"{float(value):.2f}"

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        return [{"predicted": value} for value in outputs[:, 0].float().tolist()]

    def report(self, scores: Tensor, targets: Tensor, class_names: list[str]) -> dict[str, Any]:
        targets = targets.float()
        return {
            "overall": {
                "mse": mean_squared_error(scores, targets).item(),
                "mae": mean_absolute_error(scores, targets).item(),
                "r2": r2_score(scores, targets).item(),
            }
        }

"""Evaluation reports: every metric of a checkpoint on one data split, as JSON, Markdown and a confusion-matrix PNG.

The numbers come from torchmetrics, computed once over all the predictions of the split (not averaged over
batches). The figures are drawn with matplotlib's object API (no display needed); the same drawing feeds the
TensorBoard images in :mod:`project.callbacks`.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_confusion_matrix,
    binary_f1_score,
    binary_precision,
    binary_recall,
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)
from torchmetrics.functional.regression import mean_absolute_error, mean_squared_error, r2_score

import project.user_data  # noqa: F401  (its data modules join the allow-list below)
from project.checkpointing import allowed_class
from project.data import ImageDataModule
from project.errors import UserInputError


@dataclass
class Predictions:
    """The network's outputs on a split: logits (multiclass), positive-class probabilities (binary) or values."""

    outputs: Tensor
    targets: Tensor


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, task: str) -> Predictions:
    """Run ``model`` (in eval mode) over ``loader``; outputs as the metrics take them."""
    model.eval()
    outputs, targets = [], []
    for images, batch_targets in loader:
        raw = model(images)
        outputs.append(raw if task == "multiclass" else (raw[:, 0].sigmoid() if task == "binary" else raw[:, 0]))
        targets.append(batch_targets)
    return Predictions(torch.cat(outputs), torch.cat(targets))


def compute_report(predictions: Predictions, task: str, class_names: list[str]) -> dict[str, Any]:
    """All metrics of ``predictions`` as plain values: overall, per class (classification), confusion matrix."""
    outputs, targets = predictions.outputs, predictions.targets
    if task == "regression":
        targets = targets.float()
        return {
            "task": task,
            "count": len(targets),
            "overall": {
                "mse": mean_squared_error(outputs, targets).item(),
                "mae": mean_absolute_error(outputs, targets).item(),
                "r2": r2_score(outputs, targets).item(),
            },
        }
    if task == "binary":
        overall = {
            "accuracy": binary_accuracy(outputs, targets).item(),
            "precision": binary_precision(outputs, targets).item(),
            "recall": binary_recall(outputs, targets).item(),
            "f1": binary_f1_score(outputs, targets).item(),
            "auroc": binary_auroc(outputs, targets).item(),
        }
        confusion = binary_confusion_matrix(outputs, targets)
        per_class_args = ((outputs >= 0.5).long(), targets, 2)
    else:
        classes = outputs.shape[1]
        overall = {
            "accuracy": multiclass_accuracy(outputs, targets, classes, average="micro").item(),
            "precision": multiclass_precision(outputs, targets, classes, average="macro").item(),
            "recall": multiclass_recall(outputs, targets, classes, average="macro").item(),
            "f1": multiclass_f1_score(outputs, targets, classes, average="macro").item(),
        }
        confusion = multiclass_confusion_matrix(outputs, targets, classes)
        per_class_args = (outputs, targets, classes)
    precision = multiclass_precision(*per_class_args, average=None)
    recall = multiclass_recall(*per_class_args, average=None)
    f1 = multiclass_f1_score(*per_class_args, average=None)
    support = confusion.sum(dim=1)
    per_class = [
        {
            "class": name,
            "precision": precision[i].item(),
            "recall": recall[i].item(),
            "f1": f1[i].item(),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]
    return {
        "task": task,
        "count": len(targets),
        "overall": overall,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": class_names,
    }


def markdown_report(report: dict[str, Any], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"{report['count']} examples, task: {report['task']}",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.4f} |" for name, value in report["overall"].items()]
    if "per_class" in report:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [
            f"| {row['class']} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
            for row in report["per_class"]
        ]
        names = report["class_names"]
        lines += ["", "Confusion matrix (rows: true class, columns: predicted class)", ""]
        lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [
            f"| {name} | " + " | ".join(str(n) for n in row) + " |"
            for name, row in zip(names, report["confusion_matrix"], strict=True)
        ]
    return "\n".join(lines) + "\n"


def confusion_figure(confusion: list[list[int]] | Tensor, class_names: list[str], title: str = "") -> Figure:
    """The confusion matrix as a heat map with counts (rows: true class, columns: predicted class)."""
    matrix = torch.as_tensor(confusion)
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure = Figure(figsize=(size, size), dpi=100)
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names, rotation=90 if len(class_names) > 10 else 0)
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)
    if len(class_names) <= 20:
        threshold = matrix.max().item() / 2
        for (row, column), count in zip(
            torch.cartesian_prod(*map(torch.arange, matrix.shape)).tolist(), matrix.flatten().tolist(), strict=True
        ):
            axes.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if count > threshold else "black",
            )
    figure.tight_layout()
    return figure


def write_reports(report: dict[str, Any], folder: Path, title: str) -> list[Path]:
    """``metrics.json``, ``report.md`` and (classification) ``confusion_matrix.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "metrics.json", folder / "report.md"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    written[1].write_text(markdown_report(report, title))
    if "confusion_matrix" in report:
        path = folder / "confusion_matrix.png"
        confusion_figure(report["confusion_matrix"], report["class_names"], title).savefig(path)
        written.append(path)
    return written


def data_module_from_checkpoint(checkpoint: dict[str, Any], **overrides: Any) -> ImageDataModule:
    """Rebuild the data module a checkpoint was trained with (the command line stores its class and arguments).

    The class must be one of the project's data modules (an :class:`ImageDataModule` subclass already imported):
    a checkpoint cannot make this call a function of its choosing. Its arguments are plain values.
    """
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    if class_path is None:
        raise UserInputError(
            "the checkpoint does not record its data module (it was not written by `python -m project`)"
        )
    data_class = allowed_class(class_path, ImageDataModule, "data module")
    arguments = {key: value for key, value in hparams.items() if not key.startswith("_")}
    arguments.update({key: value for key, value in overrides.items() if value is not None})
    try:
        inspect.signature(data_class).bind(**arguments)
        return data_class(**arguments)
    except TypeError as error:
        raise UserInputError(f"the checkpoint's data module arguments do not fit {class_path}: {error}") from None

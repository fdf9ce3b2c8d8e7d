"""TensorBoard: a logger whose resumed runs show one curve per tag, and dashboards beyond scalars.

:class:`RunLogger` is Lightning's TensorBoardLogger with two changes for runs that resume: TensorBoard is told to
drop what was logged after the checkpoint the run resumes from (``purge_step``), so no step is shown twice after a
crash, and the model graph is drawn once per run.

Lightning's TensorBoardLogger fills the HParams tab only with ``hp_metric`` (Lightning #5101, #8175) and a confusion
matrix cannot go through ``self.log`` (#3697). :class:`TensorBoardReports` writes, to the run's TensorBoardLogger:

- once per fit: the hyperparameters (flattened) with the validation metrics as the HParams tab's columns;
- each validation epoch: ``val/confusion_matrix`` (classification), ``val/samples`` (the first images with their
  true and predicted labels) and ``val/worst`` (the images with the highest loss).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torchmetrics.classification import MulticlassConfusionMatrix

from project.evaluation import confusion_figure

METRICS = {"multiclass": ("acc", "f1", "loss"), "binary": ("acc", "f1", "loss"), "regression": ("mse", "mae", "loss")}


class RunLogger(TensorBoardLogger):
    """TensorBoardLogger for runs that resume: one curve per tag, one graph per run.

    Args:
        purge_step: the global step of the checkpoint a resumed run starts from; TensorBoard hides what this run's
            earlier processes logged at or after it (the command line sets it on resume).
        **kwargs: see Lightning's ``TensorBoardLogger``.
    """

    def __init__(
        self,
        save_dir: str = "logs",
        name: str = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = False,
        purge_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        if purge_step is not None:
            kwargs["purge_step"] = purge_step  # passed on to torch's SummaryWriter
        super().__init__(
            save_dir, name=name, version=version, log_graph=log_graph, default_hp_metric=default_hp_metric, **kwargs
        )
        self.graph_drawn = False

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning asks at the start of fit and again for the test after fit: once is enough.
        if not self.graph_drawn:
            super().log_graph(model, input_array)
            self.graph_drawn = True


def logging_step(trainer: L.Trainer) -> int:
    """The step Lightning logs this validation's scalars at: during fit, one less than the optimizer steps taken (it
    counts them after the validation), so images and scalars line up and resumed runs purge neither."""
    return max(0, trainer.global_step - 1) if trainer.state.fn == TrainerFn.FITTING else trainer.global_step


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"network": {"init_args": {"width": 32}}}`` -> ``{"network/init_args/width": 32}``; other values as text."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif not key.startswith("_"):
            flat[name] = value if isinstance(value, bool | int | float | str) else str(value)
    return flat


def image_grid(images: Tensor, titles: list[str], columns: int = 8) -> Figure:
    """Grey or colour images (N, C, H, W) in a grid, each with its title."""
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows), dpi=80)
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(axes_grid.flat):
        axes.axis("off")
        if index < len(images):
            image = images[index]
            picture = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
            axes.imshow((picture - picture.min()) / (picture.max() - picture.min() + 1e-8), cmap="gray")
            axes.set_title(titles[index], fontsize=9)
    figure.tight_layout()
    return figure


class TensorBoardReports(L.Callback):
    """HParams with the real metrics, and confusion matrix, sample and worst-example images every validation epoch.

    Args:
        samples: how many images ``val/samples`` and ``val/worst`` show.
    """

    def __init__(self, samples: int = 16) -> None:
        self.samples = samples
        self._confusion: MulticlassConfusionMatrix | None = None
        self._first: tuple[Tensor, Tensor, Tensor] | None = None
        self._worst: list[tuple[float, int, Tensor, float, float]] = []
        self._seen = 0

    @staticmethod
    def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
        return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        task = pl_module.hparams.task
        metrics = {f"val/{name}": 0.0 for name in METRICS[task]}  # names only: TensorBoard reads the values
        experiment, start, end = hparams_summary(flatten(pl_module.hparams), metrics)
        writer = logger.experiment.file_writer
        for summary in (experiment, start, end):
            writer.add_summary(summary)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        task = pl_module.hparams.task
        classes = pl_module.network.num_outputs if task == "multiclass" else 2
        self._confusion = MulticlassConfusionMatrix(classes).to(pl_module.device) if task != "regression" else None
        self._first, self._worst, self._seen = None, [], 0

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if trainer.sanity_checking:
            return
        images, targets = batch
        raw = outputs["outputs"]
        task = pl_module.hparams.task
        if task == "multiclass":
            predicted, losses = raw.argmax(dim=1), F.cross_entropy(raw, targets, reduction="none")
        elif task == "binary":
            predicted = (raw[:, 0] > 0).long()
            losses = F.binary_cross_entropy_with_logits(raw[:, 0], targets.float(), reduction="none")
        else:
            predicted, losses = raw[:, 0], (raw[:, 0] - targets.float()).abs()
        if self._confusion is not None:
            self._confusion.update(predicted, targets)
        if self._first is None:
            count = min(self.samples, len(images))
            self._first = (images[:count].cpu(), targets[:count].cpu(), predicted[:count].cpu())
        for index, loss in enumerate(losses.tolist()):  # keep the `samples` highest losses
            self._seen += 1  # a unique second key: entries never compare their images
            entry = (loss, self._seen, images[index].cpu(), float(targets[index]), float(predicted[index]))
            if len(self._worst) < self.samples:
                heapq.heappush(self._worst, entry)
            elif loss > self._worst[0][0]:
                heapq.heapreplace(self._worst, entry)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._first is None:
            return
        confusion = self._confusion.compute() if self._confusion is not None else None  # on every process: syncs
        logger = self._tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        writer, step = logger.experiment, logging_step(trainer)
        names = getattr(trainer.datamodule, "class_names", None)
        label = (lambda value: names[int(value)]) if names and pl_module.hparams.task != "regression" else _number
        if confusion is not None:
            class_names = names or [str(i) for i in range(len(confusion))]
            title = f"validation, epoch {trainer.current_epoch}"
            writer.add_figure("val/confusion_matrix", confusion_figure(confusion.cpu(), class_names, title), step)
        images, targets, predicted = self._first
        titles = [
            f"true {label(t)}\npred {label(p)}" for t, p in zip(targets.tolist(), predicted.tolist(), strict=True)
        ]
        writer.add_figure("val/samples", image_grid(images, titles), step)
        worst = sorted(self._worst, reverse=True)
        titles = [f"true {label(t)}\npred {label(p)}\nloss {loss:.2f}" for loss, _, _, t, p in worst]
        writer.add_figure("val/worst", image_grid(torch.stack([entry[2] for entry in worst]), titles), step)


def _number(value: float) -> str:
    return f"{value:.2f}"

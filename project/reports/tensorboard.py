"""TensorBoard: a logger whose resumed runs show one curve per tag, and dashboards beyond scalars.

:class:`RunLogger` is Lightning's TensorBoardLogger with two changes for runs that resume: TensorBoard is told to
drop what was logged after the checkpoint the run resumes from (``purge_step``), so no step is shown twice after a
crash, and the model graph is drawn once per run.

Lightning's TensorBoardLogger fills the HParams tab only with ``hp_metric`` (Lightning #5101, #8175) and a confusion
matrix cannot go through ``self.log`` (#3697). :class:`TensorBoardReports` writes:

- once per fit, to the run's TensorBoardLogger: the hyperparameters (flattened) with the validation metrics as the
  HParams tab's columns, led by what differs between runs (:func:`hparams_order`);
- at each validation, to every logger that takes images (TensorBoard, and the MLflow and wandb trackers beside
  it: :mod:`project.reports.images`): ``val/confusion_matrix`` (classification), ``val/samples`` (the first images
  with their true and predicted labels) and ``val/worst`` (the images with the highest loss). For text data (a data
  module with a ``tokenizer``), ``val/samples`` and ``val/worst`` are text summaries of TensorBoard's instead: a
  Markdown table of the texts (decoded from their token ids), their true and predicted classes and losses
  (:mod:`project.reports.texts`).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import Tensor
from torch.utils.tensorboard.summary import hparams as hparams_summary

from project.data.base import ImageDataModule
from project.reports.figures import confusion_picture, grid_picture
from project.reports.images import takes_images, write_image
from project.reports.texts import WorstExamples, markdown_table, masked_rows, text_rows


class RunLogger(TensorBoardLogger):
    """TensorBoardLogger for runs that resume: one curve per tag, one graph per run.

    Args:
        name: the run's folder under ``save_dir``; the command line names it after the recipe preset.
        purge_step: the global step of the checkpoint a resumed run starts from; TensorBoard hides what this run's
            earlier processes logged at or after it (the command line sets it on resume).
        **kwargs: see Lightning's ``TensorBoardLogger``.
    """

    def __init__(
        self,
        save_dir: str = "logs",
        name: str | None = None,
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = False,
        purge_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        if purge_step is not None:
            kwargs["purge_step"] = purge_step  # passed on to torch's SummaryWriter
        super().__init__(
            save_dir,
            name=name or "runs",
            version=version,
            log_graph=log_graph,
            default_hp_metric=default_hp_metric,
            **kwargs,
        )
        self.graph_drawn = False
        self.claimed_version: int | None = None
        """A new run's version, taken before it writes (:func:`project.training.runs.claim_new_run`) so that two runs
        starting at once never share a folder; ``None``: Lightning picks the next free one when it first writes."""

    @property
    def version(self) -> int | str:
        """:attr:`claimed_version` when one was claimed, else Lightning's (the version given, or the next free one)."""
        return self.claimed_version if self.claimed_version is not None else super().version

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning asks at the start of fit and again for the test after fit: once is enough. A model without an
        # example input (a compiled network, which torch.jit cannot trace) has no graph drawn.
        if not self.graph_drawn and (input_array is not None or model.example_input_array is not None):
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
            plain = list(value) if isinstance(value, tuple) else value  # a default tuple reads as the config's list
            flat[name] = plain if isinstance(plain, bool | int | float | str) else str(plain)
    return flat


_SPEED_ONLY = ("speed/", "/foreach", "/fused", "/capturable", "/differentiable")
"""Options (their names begin or end so) that change how fast a run goes, not what it learns (channels-last,
compilation, the optimizer's implementation): last in the HParams tab, and left out while at their defaults."""


_UNUSED = ("None", False, 0)
"""Default values that mean "not used" (``0.0 == 0``): an option at such a default is left out of the HParams tab."""


def _speed_only(name: str) -> bool:
    return any(name.startswith(piece) if piece.endswith("/") else name.endswith(piece) for piece in _SPEED_ONLY)


def _imported_class(class_path: Any) -> type | None:
    """The class ``class_path`` names, if its module is imported already (nothing is imported for it)."""
    if not isinstance(class_path, str):
        return None
    module, _, name = class_path.rpartition(".")
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _dataclass_of(annotation: Any) -> type | None:
    """The dataclass an argument's annotation names (``Speed | None`` -> ``Speed``), if any."""
    candidates = typing.get_args(annotation) or (annotation,)
    return next((c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)), None)


def _default_hparams(params: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The default values of ``params`` (``cls``'s arguments, as recorded) where they are known, flattened as
    :func:`flatten` names them: each argument's default, a dataclass argument's fields' defaults, and the defaults of
    the arguments of a class named by ``{class_path, init_args}`` (an imported class's). Unknown: left out."""
    try:
        parameters = inspect.signature(cls).parameters
        hints = typing.get_type_hints(cls.__init__)
    except (TypeError, ValueError, NameError, AttributeError):  # a signature or annotation Python cannot read
        return {}
    defaults: dict[str, Any] = {}
    for key, value in params.items():
        parameter = parameters.get(key)
        if isinstance(value, Mapping) and "class_path" in value:
            named = _imported_class(value["class_path"])
            if named is not None:
                inner = _default_hparams(value.get("init_args") or {}, named)
                defaults.update({f"{key}/init_args/{name}": default for name, default in inner.items()})
        elif isinstance(value, Mapping):
            kind = _dataclass_of(hints.get(key))
            try:
                fields = dataclasses.asdict(kind()) if kind is not None else {}
            except TypeError:  # a dataclass with required fields
                fields = {}
            defaults.update(flatten(fields, f"{key}/"))
        elif parameter is not None and parameter.default is not inspect.Parameter.empty:
            defaults.update(flatten({key: parameter.default}))
    return defaults


def hparams_order(
    params: Mapping[str, Any], defaults: Mapping[str, Any], leading: tuple[str, ...] = ()
) -> tuple[dict[str, Any], set[str]]:
    """The HParams row of a run in the order to read it, and the names to mark as differing between runs.

    The order: the ``leading`` options (a sweep's sampled ones), then those that differ from their ``defaults``,
    then the rest, then the options that change only the speed (:data:`_SPEED_ONLY`). Left out: the speed options
    at their defaults, and the options at a default of :data:`_UNUSED` (a feature not used: no LoRA, no label
    smoothing, no frozen epochs).
    TensorBoard (2.21) shows the columns marked as differing first, then the others, each group sorted by name: the
    marked ones are the leading options where there are any (a sweep: the other options are the same in every
    trial), else those that differ from their defaults.
    """
    first = [name for name in params if name in leading]
    changed = [
        name
        for name in params
        if name not in first and name in defaults and params[name] != defaults[name] and not _speed_only(name)
    ]
    unused = {
        name for name in params if name in defaults and params[name] == defaults[name] and params[name] in _UNUSED
    }
    rest = [name for name in params if name not in {*first, *changed, *unused} and not _speed_only(name)]
    speed = [name for name in params if _speed_only(name) and name not in first and params[name] != defaults.get(name)]
    ordered = {name: params[name] for name in (*first, *changed, *rest, *speed)}
    return ordered, set(first or changed)


def write_hparams(
    logger: TensorBoardLogger, params: Mapping[str, Any], metrics: Mapping[str, float], differs: set[str]
) -> None:
    """Write the HParams summaries (experiment, session start and end) of ``params`` in their order, with the metric
    columns ``metrics`` (their values unused) and the names in ``differs`` marked as differing between runs."""
    experiment, start, end = hparams_summary(dict(params), dict(metrics))
    value = experiment.value[0]
    content = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in differs
    value.metadata.plugin_data.content = content.SerializeToString()
    writer = logger.experiment.file_writer
    for summary in (experiment, start, end):
        writer.add_summary(summary)


class TensorBoardReports(L.Callback):
    """HParams with the real metrics, and confusion matrix, sample and worst-example images at every validation.

    What a prediction and a loss are comes from the model's task (``pl_module.task``). Everything is kept on the
    model's device until the epoch ends: the worst examples by a running top-k, the confusion matrix as a metric.

    Args:
        samples: how many images ``val/samples`` and ``val/worst`` show.
    """

    def __init__(self, samples: int = 16) -> None:
        self.samples = samples
        self.extra_hparams: dict[str, Any] = {}
        """More columns of the run's HParams row, set before fit starts (a sweep trial's sampled options)."""
        self.extra_metrics: tuple[str, ...] = ()
        """More metric columns of the HParams tab, logged by someone else (a sweep's objective)."""
        self.leading: tuple[str, ...] = ()
        """Of the HParams row's names, those to show first (a sweep trial's sampled options and its number)."""
        self.confusion: Any = None
        self.first: tuple[Tensor, Tensor, Tensor] | None = None
        self.worst = WorstExamples(samples)

    @staticmethod
    def tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
        return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self.tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        names = (*pl_module.task.summary, "loss")
        metrics = {name: 0.0 for name in (*(f"val/{name}" for name in names), *self.extra_metrics)}  # names only
        params = flatten(pl_module.hparams) | self.extra_hparams
        ordered, differs = hparams_order(params, _default_hparams(pl_module.hparams, type(pl_module)), self.leading)
        write_hparams(logger, ordered, metrics, differs)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        confusion = pl_module.task.confusion_matrix()
        self.confusion = confusion.to(pl_module.device) if confusion is not None else None
        self.first, self.worst = None, WorstExamples(self.samples)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if trainer.sanity_checking:
            return
        images, targets = batch
        task, raw = pl_module.task, outputs["outputs"]
        decided = task.decisions(raw)
        if self.confusion is not None:
            self.confusion.update(decided, targets)
        if self.first is None:
            self.first = (images[: self.samples], targets[: self.samples], decided[: self.samples])
        self.worst.update(task.example_losses(raw, targets), images, targets, decided)  # texts: padded together

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.first is None:
            return
        confusion = self.confusion.compute() if self.confusion is not None else None  # on every process: syncs
        loggers = [logger for logger in trainer.loggers if takes_images(logger)]
        if not loggers or not trainer.is_global_zero:
            return
        step, task = logging_step(trainer), pl_module.task
        data = trainer.datamodule
        names = data.class_names if isinstance(data, ImageDataModule) else [str(i) for i in range(task.num_outputs)]
        pictures = {}
        if confusion is not None:
            confusion_names = names if len(names) == len(confusion) else [str(i) for i in range(len(confusion))]
            pictures["val/confusion_matrix"] = confusion_picture(confusion.cpu(), confusion_names, "validation")
        tokenizer = data.tokenizer if isinstance(data, ImageDataModule) else None
        if tokenizer is None:
            pictures |= self.example_pictures(task, names)
        else:  # text: tables of texts, to TensorBoard (image grids of token ids would say nothing)
            self.write_text_tables(trainer, tokenizer, task, names, step)
        for logger in loggers:  # TensorBoard, and each tracker beside it that takes images (MLflow, wandb)
            for tag, picture in pictures.items():
                write_image(logger, tag, picture, step)

    def example_pictures(self, task: Any, names: list[str]) -> dict[str, Any]:
        """``val/samples`` and ``val/worst``: grids of the first and the worst images, titled with their true and
        predicted classes (and the worst's losses)."""
        images, targets, decided = (tensor.cpu() for tensor in self.first)
        pairs = zip(targets, decided, strict=True)
        titles = [f"true {task.describe(t, names)}\npred {task.describe(d, names)}" for t, d in pairs]
        pictures = {"val/samples": grid_picture(images, titles)}
        losses, images, targets, decided = (tensor.cpu() for tensor in self.worst.kept)
        titles = [
            f"true {task.describe(t, names)}\npred {task.describe(d, names)}\nloss {loss:.2f}"
            for loss, t, d in zip(losses.tolist(), targets, decided, strict=True)
        ]
        pictures["val/worst"] = grid_picture(images, titles)
        return pictures

    def write_text_tables(self, trainer: L.Trainer, tokenizer: Any, task: Any, names: list[str], step: int) -> None:
        """``val/samples`` and ``val/worst`` as TensorBoard text summaries: Markdown tables of the first and the
        worst texts, their true and predicted classes (and the worst's losses); for masked-token pretraining, the
        hidden tokens and the predicted ones."""
        logger = self.tensorboard(trainer)
        if logger is None:
            return
        first = [tensor.cpu() for tensor in self.first]
        losses, ids, targets, decided = (tensor.cpu() for tensor in self.worst.kept)
        if task.name == "masked_tokens":  # pretraining: the tokens, [MASK] shown, and the hidden and predicted ones
            samples, worst = masked_rows(tokenizer, *first), masked_rows(tokenizer, ids, targets, decided, losses)
        else:
            samples = text_rows(tokenizer, *first, task, names)
            worst = text_rows(tokenizer, ids, targets, decided, task, names, losses)
        logger.experiment.add_text("val/samples", markdown_table(samples), step)
        logger.experiment.add_text("val/worst", markdown_table(worst), step)

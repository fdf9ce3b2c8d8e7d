"""What a run prints while it trains: a progress bar on a terminal, plain lines everywhere else.

- :class:`ProgressLog` prints one line per validation (epoch, step, the monitored metric, the losses, the learning
  rate, images per second and the time left) when there is no progress bar or the output is not a terminal: a batch
  job's log, a SLURM output file, ``enable_progress_bar: false``, the ``debug`` preset. Without it such a run is
  silent from the model summary to the test table.
- :class:`RunProgressBar` is Rich's progress bar (Lightning's default when ``rich`` is installed) whose epoch ends
  where the run does (with ``max_steps``, Lightning counts the whole epoch's batches and shows the time left for
  them), numbered as the lines are (``Epoch 1/2`` is the first of two; ``Epoch 3`` with no ``max_epochs``), showing
  the losses and the monitored metric (no ``v_num``).
- :class:`CompactSummary` says the model in one line (``Model: ConvNet · 1.2 M parameters (1.2 M trainable) · 4.8
  MB``), once per fit, instead of Lightning's table.
- :func:`say` prints once per run, not once per process; :data:`_NO_TIPS` drops Lightning's advertisements and
  :data:`_NO_ABSENT_DEVICES` its lines about accelerators that are not there (``GPU available: False ...``).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar, RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from project.data import ImageDataModule
from project.training.run_lock import first_process


def say(text: str) -> None:
    """Print ``text`` once per run, not once per process."""
    if first_process():
        print(text, flush=True)


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip" lines (advertisements for its cloud services: litlogger, litmodels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


_NO_TIPS = _NoTips()


_SAID_ELSEWHERE = (
    "Loading `train_dataloader` to estimate number of stepping batches",
    "Trainer already configured with model summary callbacks",  # (CompactSummary's line says the model)
)


class _NoAbsentDevices(logging.Filter):
    """Drops Lightning's lines about accelerators that are not there (``GPU available: False, used: False``, ``TPU
    available: False, using: 0 TPU cores``), its note that it reads the training data to count the steps and that it
    uses our model summary. A GPU
    that is there is still said (``GPU available: True (cuda), used: ...``), and one left unused is warned about."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        absent = text.endswith(("available: False, used: False", "available: False, using: 0 TPU cores"))
        said_elsewhere = text.startswith(_SAID_ELSEWHERE)
        return not (absent or said_elsewhere)


_NO_ABSENT_DEVICES = _NoAbsentDevices()


def quiet_lightning_lines() -> None:
    """Drop Lightning's tips (:data:`_NO_TIPS`) and its lines about accelerators that are not there
    (:data:`_NO_ABSENT_DEVICES`) from what it logs through ``rank_zero_info`` (whose logger is Lightning's or Lightning
    Fabric's, whichever was imported last)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        for quiet in (_NO_TIPS, _NO_ABSENT_DEVICES):
            logging.getLogger(name).addFilter(quiet)


def console_callbacks(callbacks: list[L.Callback], trainer_options: Mapping[str, Any]) -> list[L.Callback]:
    """What a run shows on the console beside ``callbacks`` (the configured ones): :class:`RunProgressBar` unless
    ``enable_progress_bar`` is false or one is configured, :class:`CompactSummary` unless ``enable_model_summary`` is
    false or a ``ModelSummary`` is configured (``trainer_options``: the Trainer's)."""
    added: list[L.Callback] = []
    wanted = {name: trainer_options.get(f"enable_{name}") is not False for name in ("progress_bar", "model_summary")}
    if wanted["progress_bar"] and not any(isinstance(c, ProgressBar) for c in callbacks):
        added.append(RunProgressBar())  # Rich's, its epoch ending where max_steps ends the run
    if wanted["model_summary"] and not any(isinstance(c, ModelSummary) for c in callbacks):
        added.append(CompactSummary())  # one line, not Lightning's table
    return added


def _epoch_label(trainer: L.Trainer) -> str:
    """The epoch under way, counted from 1, out of ``max_epochs`` when there is one: ``1/2``, or ``3`` (no limit)."""
    limit = trainer.max_epochs
    return f"{trainer.current_epoch + 1}" + (f"/{limit}" if limit is not None and limit > 0 else "")


class ProgressLog(L.Callback):
    """One plain line per validation during fit, when no progress bar is shown or the output is not a terminal.

    Args:
        always: print the lines even under a progress bar on a terminal.
    """

    def __init__(self, always: bool = False) -> None:
        self.always = always
        self.started = 0.0
        self.steps_at_start = 0
        self.since = 0.0
        self.images = 0

    def wanted(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and (
            self.always or trainer.progress_bar_callback is None or not sys.stdout.isatty()
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = self.since = time.perf_counter()
        self.steps_at_start = trainer.global_step  # a resumed run: its speed is measured from here
        self.images = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images += len(batch[0]) if isinstance(batch, list | tuple) and batch else 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self.wanted(trainer):
            print(self.line(trainer), flush=True)

    def line(self, trainer: L.Trainer) -> str:
        """``epoch 1/2 · step 860/1720 · val/acc 0.9871 · val/loss 0.0412 · train/loss 0.0534 · lr 2.7e-03 ·
        1,205 images/s · 0:00:52 left`` (texts/s for text data)."""
        now = time.perf_counter()
        total = trainer.estimated_stepping_batches
        step = f"step {trainer.global_step}/{total}" if math.isfinite(total) else f"step {trainer.global_step}"
        parts = [f"epoch {_epoch_label(trainer)}", step]
        metrics = trainer.callback_metrics
        for name in dict.fromkeys([_monitored(trainer), "val/loss", "train/loss_step"]):
            if name in metrics:
                parts.append(f"{name.removesuffix('_step')} {float(metrics[name]):.4g}")
        if trainer.optimizers:
            rates = dict.fromkeys(f"{group['lr']:.2g}" for group in trainer.optimizers[0].param_groups)
            parts.append(f"lr {'/'.join(rates)}")
        data = trainer.datamodule
        unit = "texts" if isinstance(data, ImageDataModule) and data.vocab_size else "images"
        parts.append(f"{self.images / max(now - self.since, 1e-9):,.0f} {unit}/s")
        steps = trainer.global_step - self.steps_at_start
        if steps > 0 and math.isfinite(total):
            left = (now - self.started) / steps * max(total - trainer.global_step, 0)
            parts.append(f"{timedelta(seconds=round(left))} left")
        self.since, self.images = now, 0
        return " · ".join(parts)


def _monitored(trainer: L.Trainer) -> str | None:
    best = trainer.checkpoint_callback
    return best.monitor if isinstance(best, ModelCheckpoint) else None


class RunProgressBar(RichProgressBar):
    """Rich's progress bar, its epoch total capped at the batches left before ``max_steps`` ends the run, its epochs
    counted as :class:`ProgressLog`'s lines count them (``Epoch 1/2``; Lightning's own says ``Epoch 0/1``, and ``Epoch
    2/-2`` without ``max_epochs``), showing the training and validation losses and the monitored metric."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps_at_epoch_start: int | None = None
        self.described: tuple[Any, int] | None = None
        """The bar and epoch that the description was last written for."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.steps_at_epoch_start = trainer.global_step
        super().on_train_epoch_start(trainer, pl_module)
        self.describe(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.describe(trainer)  # (a run resumed mid-epoch makes its bar here)

    def describe(self, trainer: L.Trainer) -> None:
        """Write ``Epoch 1/2`` on the training bar, once per bar and epoch."""
        bar = self.train_progress_bar_id
        if self.progress is None or bar is None or self.described == (bar, trainer.current_epoch):
            return
        text = f"Epoch {_epoch_label(trainer)}"
        text = f"{text:{len(self.validation_description)}}"  # as wide as "Validation": no flicker between them
        style = self.theme.description
        self.progress.update(bar, description=f"[{style}]{text}" if style else text)
        self.described = (bar, trainer.current_epoch)
        self.refresh()  # at once: Rich drew Lightning's own description ("Epoch 0/1") a moment ago

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The losses and the monitored metric, as the per-validation lines show them (no ``v_num``)."""
        metrics = super().get_metrics(trainer, pl_module)
        wanted = dict.fromkeys(["train/loss_step", "train/loss", "val/loss", _monitored(trainer)])
        return {name.removesuffix("_step"): metrics[name] for name in wanted if name in metrics}

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        trainer = self.trainer
        if trainer.max_steps < 0 or self.steps_at_epoch_start is None:
            return total
        left = (trainer.max_steps - self.steps_at_epoch_start) * trainer.accumulate_grad_batches
        return min(total, max(left, 0))


class CompactSummary(ModelSummary):
    """Lightning's model summary in one line, once per fit: the network's class, its parameters (trainable ones
    too), their size and, when Lightning counts them, the operations of one forward pass. ``ModelSummary`` (the
    table) in ``trainer.callbacks`` instead prints the table; ``enable_model_summary: false`` prints neither."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        print(_summary_line(dict(summary_data), total_parameters, trainable_parameters, model_size, total_flops))


def _summary_line(columns: dict[str, list[str]], total: int, trainable: int, megabytes: float, flops: int) -> str:
    """``Model: ConvNet · 1.2 M parameters (1.2 M trainable) · 4.8 MB · 24 M FLOPs per example``: ``columns`` are
    Lightning's summary table's (``Name``, ``Type``, ...); the network is the submodule named ``network``, or the
    first one."""
    names, types = columns.get("Name", []), columns.get("Type", [])
    network = types[names.index("network")] if "network" in names else (types[0] if types else "?")
    parts = [
        f"Model: {network}",
        f"{_count(total)} parameters ({_count(trainable)} trainable)",
        f"{megabytes:.1f} MB",
    ]
    if flops:
        parts.append(f"{_count(flops)} FLOPs per example")
    return " · ".join(parts)


def _count(number: float) -> str:
    """``1.2 M``, ``24 k``, ``310``: a count to two or three significant figures."""
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.3g} {unit}"
    return f"{number:.0f}"

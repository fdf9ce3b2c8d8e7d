"""What a run prints while it trains: a progress bar on a terminal, plain lines everywhere else.

- :class:`ProgressLog` prints one line per validation (epoch, step, the monitored metric, the losses, the learning
  rate, images per second and the time left) when there is no progress bar or the output is not a terminal: a batch
  job's log, a SLURM output file, ``enable_progress_bar: false``, the ``debug`` preset. Without it such a run is
  silent from the model summary to the test table.
- :class:`RunProgressBar` is Rich's progress bar (Lightning's default when ``rich`` is installed) whose epoch ends
  where the run does: with ``max_steps``, Lightning counts the whole epoch's batches and shows the time left for them.
- :func:`say` prints once per run, not once per process; :data:`NO_TIPS` drops Lightning's advertisements.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from project.training.run_lock import first_process


def say(text: str) -> None:
    """Print ``text`` once per run, not once per process."""
    if first_process():
        print(text, flush=True)


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip" lines (advertisements for its cloud services: litlogger, litmodels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


NO_TIPS = _NoTips()


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
        1,205 images/s · 0:00:52 left``."""
        now = time.perf_counter()
        total = trainer.estimated_stepping_batches
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {trainer.current_epoch + 1}{epochs}", f"step {trainer.global_step}/{total}"]
        metrics = trainer.callback_metrics
        best = trainer.checkpoint_callback
        monitor = best.monitor if isinstance(best, ModelCheckpoint) else None
        for name in dict.fromkeys([monitor, "val/loss", "train/loss_step"]):
            if name in metrics:
                parts.append(f"{name.removesuffix('_step')} {float(metrics[name]):.4g}")
        if trainer.optimizers:
            rates = dict.fromkeys(f"{group['lr']:.2g}" for group in trainer.optimizers[0].param_groups)
            parts.append(f"lr {'/'.join(rates)}")
        parts.append(f"{self.images / max(now - self.since, 1e-9):,.0f} images/s")
        steps = trainer.global_step - self.steps_at_start
        if steps > 0 and math.isfinite(total):
            left = (now - self.started) / steps * max(total - trainer.global_step, 0)
            parts.append(f"{timedelta(seconds=round(left))} left")
        self.since, self.images = now, 0
        return " · ".join(parts)


class RunProgressBar(RichProgressBar):
    """Rich's progress bar, its epoch total capped at the batches left before ``max_steps`` ends the run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps_at_epoch_start: int | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.steps_at_epoch_start = trainer.global_step
        super().on_train_epoch_start(trainer, pl_module)

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        trainer = self.trainer
        if trainer.max_steps < 0 or self.steps_at_epoch_start is None:
            return total
        left = (trainer.max_steps - self.steps_at_epoch_start) * trainer.accumulate_grad_batches
        return min(total, max(left, 0))

"""Early stopping that follows the task: stop a run when the task's own validation metric stops improving.

Lightning's ``EarlyStopping`` needs the metric and direction spelled out, and a preset cannot know them: ``val/acc``
to maximise for classification, ``val/loss`` to minimise for regression. :class:`TaskEarlyStopping` reads them from
the model (:class:`~project.training.checkpoints.MonitoredModule`), as :class:`~project.training.BestCheckpoint`
does, so one modifier preset (``--config early_stopping``) serves every recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

from project.training.checkpoints import MonitoredModule


class TaskEarlyStopping(EarlyStopping):
    """Stop training once the task's validation metric has not improved by ``min_delta`` for ``patience``
    validations in a row. Its counters are in every checkpoint, so a resumed run keeps counting.

    Args:
        monitor, mode: a metric and direction of your own instead of the task's.
        min_delta: the least change that counts as an improvement (in the metric's units).
        patience: validations without improvement before the run stops.
        **kwargs: see Lightning's ``EarlyStopping``.
    """

    def __init__(
        self,
        monitor: str | None = None,
        mode: Literal["min", "max"] | None = None,
        min_delta: float = 0.0,
        patience: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            monitor=monitor or "val/loss", mode=mode or "min", min_delta=min_delta, patience=patience, **kwargs
        )
        self.follows_task = monitor is None
        """Whether the metric is the model's (``monitored_metric``) rather than one given here."""
        self.improvement = abs(min_delta)
        """``min_delta`` as given; Lightning keeps it signed by the direction."""
        self.best_epoch: int | None = None
        """The epoch (counted from 1) of the best value, which the line that ends the run names."""

    def follow_task(self, pl_module: L.LightningModule) -> None:
        """Monitor the model's own metric and direction unless told another (before any state is restored)."""
        if self.follows_task and isinstance(pl_module, MonitoredModule):
            self.monitor, self.mode = pl_module.monitored_metric
            self.min_delta = self.improvement if self.mode == "max" else -self.improvement
            self.best_score = torch.tensor(-torch.inf if self.mode == "max" else torch.inf)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.follow_task(pl_module)
        super().setup(trainer, pl_module, stage)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_epoch = state_dict.get("best_epoch")

    # Lightning checks at the epoch's end or after each validation, depending on how often the run validates.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.say_stop(trainer, lambda: super(TaskEarlyStopping, self).on_train_epoch_end(trainer, pl_module))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.say_stop(trainer, lambda: super(TaskEarlyStopping, self).on_validation_end(trainer, pl_module))

    def say_stop(self, trainer: L.Trainer, check: Callable[[], None]) -> None:
        """Run Lightning's ``check``, note the epoch of a new best value, and say so when the check ends the run
        (Lightning stops without a word unless ``verbose``)."""
        best, stopping = self.best_score.clone(), trainer.should_stop
        check()
        if not torch.equal(best, self.best_score):
            self.best_epoch = trainer.current_epoch + 1
        ended = trainer.should_stop and not stopping and self.stopped_epoch == trainer.current_epoch
        if ended and trainer.is_global_zero:
            print(self.stop_line(trainer.current_epoch + 1), flush=True)

    def stop_line(self, epoch: int) -> str:
        """``Early stopping after epoch 7: val/acc has not improved for 3 validations in a row (patience 3); best
        0.9871 at epoch 4``, or the threshold or non-finite value that stopped the run."""
        best = f"best {float(self.best_score):.4g}" + (f" at epoch {self.best_epoch}" if self.best_epoch else "")
        if self.wait_count >= self.patience:
            by = f" by more than {self.improvement:g}" if self.improvement else ""
            why = f"has not improved{by} for {self.wait_count} validations in a row (patience {self.patience})"
        else:
            why = "reached its stopping_threshold or divergence_threshold, or is not finite"
        return f"Early stopping after epoch {epoch}: {self.monitor} {why}; {best}"

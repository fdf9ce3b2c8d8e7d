"""Early stopping that follows the task: stop a run when the task's own validation metric stops improving.

Lightning's ``EarlyStopping`` needs the metric and direction spelled out, and a preset cannot know them: ``val/acc``
to maximise for classification, ``val/loss`` to minimise for regression. :class:`TaskEarlyStopping` reads them from
the model (:class:`~project.training.checkpoints.MonitoredModule`), as :class:`~project.training.BestCheckpoint`
does, so one modifier preset (``--config early_stopping``) serves every recipe.
"""

from __future__ import annotations

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

    def follow_task(self, pl_module: L.LightningModule) -> None:
        """Monitor the model's own metric and direction unless told another (before any state is restored)."""
        if self.follows_task and isinstance(pl_module, MonitoredModule):
            self.monitor, self.mode = pl_module.monitored_metric
            self.min_delta = self.improvement if self.mode == "max" else -self.improvement
            self.best_score = torch.tensor(-torch.inf if self.mode == "max" else torch.inf)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.follow_task(pl_module)
        super().setup(trainer, pl_module, stage)

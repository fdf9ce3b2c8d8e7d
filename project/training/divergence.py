"""Noticing that training diverged, without a host sync every step.

:class:`DivergenceWatch` keeps, on the device, the first step whose loss was not finite (and whether that batch's own
numbers were); the host looks only when it syncs anyway: every ``log_every_n_steps`` steps, at the end of an epoch,
and before any checkpoint is written. So no non-finite state is ever saved, and the error still names the step where
it began (docs/speed.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from project.errors import TrainingDivergedError


class DivergenceWatch:
    """The first training step with a non-finite loss, recorded on the loss's device."""

    def __init__(self) -> None:
        self.first_bad: Tensor | None = None  # [batch number, loss, 1 if the batch's own numbers were not finite]
        self.counter: Tensor | None = None  # the batch number, on the device
        self.batches = 0  # the same, on the host
        self.where: dict[int, tuple[int, int, int]] = {}  # batch number -> (step, epoch, batch index), since a check

    def record(self, loss: Tensor, images: Tensor, targets: Tensor, step: int, epoch: int, batch_index: int) -> None:
        """Note this step's loss; device operations only."""
        if self.first_bad is None or self.counter is None:
            self.first_bad = torch.full((3,), -1.0, device=loss.device)
            self.counter = torch.zeros((), device=loss.device)
        bad_data = ~torch.isfinite(images).all()
        if targets.is_floating_point():
            bad_data |= ~torch.isfinite(targets).all()
        this = torch.stack([self.counter, loss.detach().float(), bad_data.float()])
        self.first_bad = torch.where((self.first_bad[0] < 0) & ~torch.isfinite(loss), this, self.first_bad)
        self.counter += 1
        self.where[self.batches] = (step, epoch, batch_index)
        self.batches += 1

    def check(self) -> None:
        """Raise :class:`TrainingDivergedError` if a non-finite loss was recorded (one host sync)."""
        if self.first_bad is None:
            return
        batch, loss, bad_data = self.first_bad.tolist()
        if batch < 0:
            self.where.clear()
            return
        step, epoch, batch_index = self.where[int(batch)]
        where = f"at step {step} (epoch {epoch}, batch {batch_index})"
        if bad_data:
            raise TrainingDivergedError(
                f"the training loss is {loss} {where} because the batch's images or targets hold inf or nan: the data "
                f"is broken, not the learning rate; the weights after it are never saved",
                data_problem=True,
            )
        raise TrainingDivergedError(f"the training loss is {loss} {where}; the weights after it are never saved")

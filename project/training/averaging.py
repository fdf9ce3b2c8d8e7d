"""Averaged weights: an exponential moving average (EMA) or a stochastic weight average (SWA) of the network.

Both are Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`: the average (a
:class:`torch.optim.swa_utils.AveragedModel`) is swapped in for each validation, copied into the model when training
ends, and saved as the checkpoint's ``state_dict`` (the weights being trained go to ``current_model_state``, the
average's counter to ``averaging_state``). So everything that reads ``state_dict`` (validation, test after fit,
``validate``/``test --ckpt_path``, ``python -m project evaluate``, ``export``, ``predict``,
``--model.finetuning.pretrained``) uses the average, and only a resumed fit reads ``current_model_state``.

What :class:`AveragedWeights` adds to Lightning's callback (why each: docs/design_notes.md):

- before the first update (SWA from a later epoch, EMA from a later step) nothing is swapped in, copied or saved as
  the average;
- the checkpoint records which weights its ``state_dict`` holds (:data:`AVERAGED_WEIGHTS`: method, settings, number
  of updates), which ``config.json`` of an export and the resume checks read (:func:`averaged_weights`);
- the average lives on the device the model trains on, unless ``device`` names another;
- the test after fit uses the best checkpoint's average;
- a LoRA run's ``current_model_state`` leaves out the frozen base weights, as its ``state_dict`` does;
- BatchNorm statistics are averaged with the weights (``use_buffers=True``, Lightning's default).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from project.errors import UserInputError
from project.networks.lora import base_weights
from project.training.task_module import TaskModule

AVERAGED_WEIGHTS = "averaged_weights"
"""Checkpoint key: what the ``state_dict`` holds when it is an average (``{"method": "ema", "decay": 0.999, ...,
"updates": 120}``); absent when the ``state_dict`` holds the weights being trained."""
CURRENT_WEIGHTS = "current_model_state"
"""Checkpoint key under which Lightning's ``WeightAveraging`` keeps the weights being trained (read only on resume)."""
AVERAGING_STATE = "averaging_state"
"""Checkpoint key under which Lightning's ``WeightAveraging`` keeps the average's own state (``n_averaged``)."""


def averaged_weights(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """What a checkpoint's ``state_dict`` averages (:data:`AVERAGED_WEIGHTS`), ``None`` when it holds the trained
    weights themselves. A checkpoint of Lightning's own callbacks, which record nothing, is ``{"method":
    "WeightAveraging"}``."""
    if CURRENT_WEIGHTS not in checkpoint:
        return None
    return dict(checkpoint.get(AVERAGED_WEIGHTS) or {"method": "WeightAveraging"})


def averaging_method(callback: WeightAveraging) -> str:
    """The method a callback averages by, as checkpoints record it: ``ema``, ``swa``, or a Lightning class's name."""
    return callback.method if isinstance(callback, AveragedWeights) else type(callback).__name__


def _ema_update(
    averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor, decay: float, warmup: bool
) -> None:
    """One EMA step over lists of tensors of one device and dtype (``AveragedModel``'s ``multi_avg_fn``):
    ``average += (1 - d) * (weights - average)``. With ``warmup``, ``d = min(decay, (1 + n) / (10 + n))`` after ``n``
    updates (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so a short run's average is not still mostly
    the random initial weights. Computed on the device (no host sync per step). Integer buffers (BatchNorm's
    ``num_batches_tracked``) follow the model."""
    if not averaged[0].is_floating_point():
        for average, value in zip(averaged, current, strict=True):
            average.copy_(value)
        return
    factor = torch.as_tensor(decay, device=num_averaged.device)
    if warmup:
        factor = torch.minimum(factor, (1.0 + num_averaged) / (10.0 + num_averaged))
    weight = (1.0 - factor).to(averaged[0].dtype)
    for average, value in zip(averaged, current, strict=True):
        average.lerp_(value, weight)


class AveragedWeights(WeightAveraging):
    """Lightning's weight averaging, checkpoints that say what they hold, and no average before the first update.

    Subclasses say when to update (:meth:`due`) and how (the ``AveragedModel`` arguments they pass up).

    Args:
        device: where the average is kept (``cpu`` saves GPU memory); default: where the model trains.
        **kwargs: for :class:`~lightning.pytorch.callbacks.WeightAveraging` (``avg_fn``, ``multi_avg_fn``).
    """

    method: ClassVar[str] = "average"
    """The name checkpoints record (:data:`AVERAGED_WEIGHTS`) and a resumed run must keep."""

    def __init__(self, device: str | None = None, **kwargs: Any) -> None:
        super().__init__(device=device, use_buffers=True, **kwargs)
        self.device = device
        self.updates = 0
        """How many times the average was updated: 0 means there is no average yet (nothing to swap in or save)."""

    def settings(self) -> dict[str, Any]:
        """The settings checkpoints record beside the method (plain values)."""
        return {}

    def due(self, step_idx: int | None, epoch_idx: int | None) -> bool:
        """Whether to update after optimizer step ``step_idx`` or at the end of epoch ``epoch_idx`` (zero-based)."""
        raise NotImplementedError

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        # Lightning asks only when an update may follow (never twice for one step, resumed or not), and updates
        # whenever the answer is yes: count them here.
        if not self.due(step_idx, epoch_idx):
            return False
        self.updates += 1
        return True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.device is None:
            # Lightning builds the average here, before the strategy moves the model: moved first, the average lives
            # where the model trains.
            pl_module.to(trainer.strategy.root_device)
        with warnings.catch_warnings():
            # TaskModule.configure_model only sets the memory layout and compiles: it shards nothing, which is what
            # Lightning's warning is about.
            warnings.filterwarnings("ignore", message=".*WeightAveraging callback with a model that overrides")
            super().setup(trainer, pl_module, stage)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.updates:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.updates:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.updates:
            super().on_train_end(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.updates = state_dict["updates"]

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if not self.updates:  # no average yet: the state_dict holds the only weights there are
            return
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if CURRENT_WEIGHTS not in checkpoint:  # saved outside fit: Lightning saved no average
            return
        if _lora_run(pl_module):  # as TaskModule.on_save_checkpoint leaves them out of the state_dict
            for name in base_weights(pl_module):
                checkpoint[CURRENT_WEIGHTS].pop(name, None)
        checkpoint[AVERAGED_WEIGHTS] = {"method": self.method, **self.settings(), "updates": self.updates}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            # Lightning restores callbacks for test and validate too, and its callback, still holding the average of
            # the fit before (the test after fit), would load the trained weights over the checkpoint's average.
            return
        if CURRENT_WEIGHTS not in checkpoint:
            # The state_dict holds the trained weights (averaging had not started, or the run had none): the model
            # has them already, and the first update starts the average from the weights of that step.
            rank_zero_info(f"{self.method.upper()}: the checkpoint holds no average; it starts at the next update")
            return
        if _lora_run(pl_module):  # the frozen base, as TaskModule.on_load_checkpoint put back into the state_dict
            for name, tensor in base_weights(pl_module).items():
                checkpoint[CURRENT_WEIGHTS].setdefault(name, tensor.detach())
        super().on_load_checkpoint(trainer, pl_module, checkpoint)


def _lora_run(pl_module: L.LightningModule) -> bool:
    """Whether the module trains LoRA adapters, whose checkpoints leave the frozen base out."""
    return isinstance(pl_module, TaskModule) and bool(pl_module.hparams.lora)


class EMAWeights(AveragedWeights):
    """An exponential moving average of the weights, updated after every ``every_n_steps``-th optimizer step from
    step ``start_step`` on (timm's ``--model-ema``). Validation, checkpoints and everything read from them use it.

    Args:
        decay: how much of the average each update keeps (0.999: the last ~1000 updates count most); in [0, 1).
        warmup: let the decay grow as ``(1 + n) / (10 + n)`` over the first updates, up to ``decay``, so that a short
            run's average is not still mostly its random start.
        start_step: the first optimizer step (zero-based) that updates the average; validation uses the trained
            weights until then.
        every_n_steps: update after every N-th optimizer step (fewer updates: less time on large networks).
        device: where the average is kept; default where the model trains (``cpu`` saves GPU memory).
    """

    method = "ema"

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        start_step: int = 0,
        every_n_steps: int = 1,
        device: str | None = None,
    ) -> None:
        if not 0 <= decay < 1:
            raise UserInputError(f"EMAWeights.decay must lie in [0, 1), got {decay} (0.999 is usual)")
        if start_step < 0 or every_n_steps < 1:
            raise UserInputError(
                f"EMAWeights.start_step must be 0 or more and every_n_steps 1 or more, got {start_step} and "
                f"{every_n_steps}"
            )
        update = functools.partial(_ema_update, decay=decay, warmup=warmup)
        super().__init__(device=device, multi_avg_fn=update)
        self.decay, self.warmup, self.start_step, self.every_n_steps = decay, warmup, start_step, every_n_steps

    def settings(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "start_step": self.start_step}

    def due(self, step_idx: int | None, epoch_idx: int | None) -> bool:
        return step_idx is not None and step_idx >= self.start_step and step_idx % self.every_n_steps == 0


class SWAWeights(AveragedWeights):
    """Stochastic weight averaging: the equal average of the weights at the end of each epoch from ``start_epoch``
    on (``torch.optim.swa_utils``: ``AveragedModel.update_parameters`` once per epoch). Validation, checkpoints and
    everything read from them use it from that epoch on.

    The update follows the epoch's last optimizer step, before the validation at the epoch's end, which so sees the
    average with this epoch's weights in it (Lightning's epoch-end update comes after that validation).

    It pays off with a learning rate that stays high while it averages (``--model.lr_scheduler Constant``:
    docs/averaging.md).

    Args:
        start_epoch: the first epoch (zero-based) whose end weights go into the average.
        device: where the average is kept; default where the model trains (``cpu`` saves GPU memory).
    """

    method = "swa"

    def __init__(self, start_epoch: int = 1, device: str | None = None) -> None:
        if start_epoch < 0:
            raise UserInputError(f"SWAWeights.start_epoch must be 0 or more, got {start_epoch}")
        super().__init__(device=device)  # no averaging function: AveragedModel's equal average
        self.start_epoch = start_epoch
        self.epoch_ending = False
        """Whether the training batch just done is the last of an epoch that is averaged."""

    def settings(self) -> dict[str, Any]:
        return {"start_epoch": self.start_epoch}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.epoch_ending = trainer.is_last_batch and trainer.current_epoch >= self.start_epoch
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def due(self, step_idx: int | None, epoch_idx: int | None) -> bool:
        return step_idx is not None and self.epoch_ending

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        note = self.nothing_averaged(trainer.current_epoch)
        if note and trainer.is_global_zero:
            print(note, flush=True)

    def nothing_averaged(self, epochs: int) -> str | None:
        """A note when the run ended, after ``epochs`` epochs, with an average of fewer than two points: its weights
        are then the trained ones (``None`` otherwise)."""
        if self.updates >= 2:
            return None
        first = self.start_epoch + 1  # as the console counts epochs, from 1
        how = (
            f"lower --trainer.callbacks.start_epoch (now {self.start_epoch}: from epoch {first}) or raise "
            f"--trainer.max_epochs"
        )
        if self.updates == 0:
            return (
                f"SWA: the run ended after epoch {epochs}, before epoch {first}, the first it averages: its weights "
                f"are the trained ones, not an average; {how}"
            )
        return (
            f"SWA averaged one point (the end of epoch {first}): the averaged weights equal the trained ones; to "
            f"average several epochs, {how}"
        )

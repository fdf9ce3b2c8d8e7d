"""Learning-rate schedules of the project: ordinary ``torch.optim.lr_scheduler`` classes, named by class path as any
torch scheduler is (``--model.lr_scheduler OneCycle --model.lr_scheduler.warmup_epochs 1``), that shape the learning
rate over the run's optimizer steps (docs/schedules.md):

- :class:`Constant` (the default), :class:`OneCycle` (torch's OneCycleLR shape), :class:`Cosine` and :class:`Linear`
  (a linear warm-up, then a cosine or straight decay to ``min_lr_fraction``), :class:`Steps` (times ``gamma`` every
  N epochs or at given epochs);
- each is a ``LambdaLR`` of one :class:`~project.training.lr_factor.LRFactor` per parameter group, a pure function of
  the step with plain fields: the scheduler's state dict is plain values, and restores the plan exactly;
- the run sizes them when the optimizer is configured (:meth:`PlannedSchedule.plan`: its steps, its epochs' steps, the
  steps a frozen backbone's rate is held at 0), and a resumed run of another length or learning rate re-plans what is
  left (:meth:`PlannedSchedule.replan`).

Any other torch scheduler works too (:mod:`project.training.torch_schedulers`), stepped every epoch as torch's
convention has it (``OneCycleLR`` and ``CyclicLR`` every optimizer step, as theirs has it), not rescaled on resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from project.errors import UserInputError
from project.training.lr_factor import DEFAULT_WARMUP_FRACTION, SHAPES, LRFactor
from project.training.torch_schedulers import carry_on_torch_scheduler


@dataclass(frozen=True)
class RunSteps:
    """What a schedule is sized by: the run's optimizer steps, one epoch's, and the steps each named parameter group
    is frozen for (``{"backbone": 200}``)."""

    total: int
    per_epoch: int
    frozen: dict[str, int] = field(default_factory=dict)


class PlannedSchedule(LambdaLR):
    """A learning rate that is each parameter group's base rate times an :class:`LRFactor` of the optimizer step.

    Built by the command line from its options (a subclass's constructor checks them); sized by :meth:`plan` before
    the first step; stepped every optimizer step.
    """

    shape: ClassVar[str] = "none"
    """The :class:`LRFactor` schedule: ``none``, a shape of :data:`~project.training.lr_factor.SHAPES`, or ``step``."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        super().__init__(optimizer, [LRFactor(1, self.shape) for _ in optimizer.param_groups])

    def settings(self, per_epoch: int) -> dict[str, Any]:
        """The subclass's :class:`LRFactor` fields for a run of ``per_epoch`` optimizer steps an epoch."""
        return {}

    def warmup_steps(self, per_epoch: int) -> int:
        """The warm-up in optimizer steps where it is given in epochs or steps; 0 where it is a fraction or none."""
        return 0

    def counts_epochs(self) -> bool:
        """Whether the schedule is given in epochs: :meth:`plan` then needs the run's steps in an epoch."""
        return False

    def plan(self, run: RunSteps) -> None:
        """Size the schedule for ``run``, and set each group's learning rate for the step it is at."""
        warmup = self.warmup_steps(run.per_epoch)
        if warmup and warmup >= run.total:
            raise UserInputError(
                f"model.lr_scheduler {type(self).__name__}: the warm-up is {warmup} optimizer steps, and the whole run "
                f"is {run.total}: the warm-up must end before the run does; give a shorter warm-up or a longer run"
            )
        for group, factor in zip(self.optimizer.param_groups, self.lr_lambdas, strict=True):
            settings = self.settings(run.per_epoch)
            frozen = run.frozen.get(group.get("name", ""), 0)
            vars(factor).update(total_steps=run.total, frozen_steps=frozen, warmup_steps=warmup, **settings)
        self.set_rates()

    def set_rates(self) -> None:
        """Each group's learning rate at the step the schedule stands at."""
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.last_epoch)

    def replan(self, base_lrs: list[float], total_steps: int) -> list[str]:
        """Follow the options a resumed run was given rather than the checkpoint's: each group's learning rate
        (``base_lrs``) scales the whole plan; a shape is stretched (or squeezed) to end at ``total_steps``;
        :class:`Steps` keeps its drops where they were. Returns what changed."""
        step, notes = self.last_epoch, []
        for index, (group, factor) in enumerate(zip(self.optimizer.param_groups, self.lr_lambdas, strict=True)):
            name = group.get("name", str(index))
            if self.base_lrs[index] != base_lrs[index]:
                notes.append(f"{name} learning rate {base_lrs[index]:g} (was {self.base_lrs[index]:g})")
                self.base_lrs[index] = group["initial_lr"] = base_lrs[index]
            planned = factor.end_step(step)
            if factor.schedule in SHAPES and total_steps > step and planned != total_steps:
                change = factor.replan(step, total_steps)
                notes.append(f"{name}: the run now ends at step {total_steps} (planned: {planned}); {change}")
            elif factor.schedule == "step" and planned != total_steps:
                factor.total_steps = total_steps
                notes.append(f"{name}: the run now ends at step {total_steps}; the step schedule keeps its drops")
        self.set_rates()
        return notes


class Constant(PlannedSchedule):
    """The optimizer's learning rate throughout (a frozen backbone's held at 0 for its epochs)."""


class _WarmupSchedule(PlannedSchedule):
    """A schedule that warms up: over a fraction of each cycle (a resumed run of another length stretches it), or
    over a number of epochs or optimizer steps (exact, and kept on resume). One of the three at a time; none given:
    :data:`~project.training.lr_factor.DEFAULT_WARMUP_FRACTION` of the run.

    Args:
        warmup_fraction: the warm-up's share of the run's steps, in (0, 1).
        warmup_epochs: the warm-up in epochs, exact in optimizer steps (an epoch of N batches accumulated over A is
            ceil(N / A) steps, as Lightning counts them).
        warmup_steps: the warm-up in optimizer steps.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_fraction: float | None = None,
        warmup_epochs: int | None = None,
        warmup_steps: int | None = None,
    ) -> None:
        ways = {"warmup_fraction": warmup_fraction, "warmup_epochs": warmup_epochs, "warmup_steps": warmup_steps}
        given = [f"{name} {value}" for name, value in ways.items() if value is not None]
        if len(given) > 1:
            raise UserInputError(f"model.lr_scheduler: the warm-up is given {len(given)} ways ({', '.join(given)})")
        if warmup_fraction is not None and not 0 < warmup_fraction < 1:
            raise UserInputError(f"model.lr_scheduler.warmup_fraction must lie in (0, 1), got {warmup_fraction}")
        for name, value in (("warmup_epochs", warmup_epochs), ("warmup_steps", warmup_steps)):
            if value is not None and value < 1:
                raise UserInputError(f"model.lr_scheduler.{name} must be a whole number, 1 or more, got {value}")
        self.warmup_fraction = DEFAULT_WARMUP_FRACTION if not given else warmup_fraction
        self.warmup_epochs, self.warmup_steps_given = warmup_epochs, warmup_steps
        super().__init__(optimizer)

    def counts_epochs(self) -> bool:
        return self.warmup_epochs is not None

    def warmup_steps(self, per_epoch: int) -> int:
        if self.warmup_steps_given is not None:
            return self.warmup_steps_given
        return self.warmup_epochs * per_epoch if self.warmup_epochs is not None else 0

    def settings(self, per_epoch: int) -> dict[str, Any]:
        return {"warmup_fraction": self.warmup_fraction or 0.0}


class OneCycle(_WarmupSchedule):
    """torch's OneCycleLR shape over the run: a cosine warm-up from lr/25 to the optimizer's lr, then a cosine anneal
    to lr/250,000 (Smith's super-convergence schedule). Args: see :class:`_WarmupSchedule`."""

    shape = "onecycle"


class _DecaySchedule(_WarmupSchedule):
    """A linear warm-up from 0, then a decay to ``min_lr_fraction`` of the learning rate at the run's end.

    Args:
        min_lr_fraction: where the decay ends, in [0, 1).
        warmup_fraction, warmup_epochs, warmup_steps: see :class:`_WarmupSchedule`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        min_lr_fraction: float = 0.0,
        warmup_fraction: float | None = None,
        warmup_epochs: int | None = None,
        warmup_steps: int | None = None,
    ) -> None:
        if not 0 <= min_lr_fraction < 1:
            raise UserInputError(f"model.lr_scheduler.min_lr_fraction must lie in [0, 1), got {min_lr_fraction}")
        self.min_lr_fraction = min_lr_fraction
        super().__init__(optimizer, warmup_fraction, warmup_epochs, warmup_steps)

    def settings(self, per_epoch: int) -> dict[str, Any]:
        return {**super().settings(per_epoch), "min_lr_fraction": self.min_lr_fraction}


class Cosine(_DecaySchedule):
    """A linear warm-up, then a cosine decay (Hugging Face's ``get_cosine_schedule_with_warmup``, with a floor)."""

    shape = "cosine"


class Linear(_DecaySchedule):
    """A linear warm-up, then a straight decay (Hugging Face's ``get_linear_schedule_with_warmup``, with a floor)."""

    shape = "linear"


class Steps(PlannedSchedule):
    """The learning rate times ``gamma`` every ``every_epochs`` epochs, or at each of ``at_epochs`` (one of the two).

    Args:
        every_epochs: a drop every N epochs.
        at_epochs: a drop at each of these epochs (increasing, 1 or more: ``[30, 60]``).
        gamma: the multiplier at each drop, in (0, 1).
    """

    shape = "step"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        every_epochs: int | None = None,
        at_epochs: list[int] | None = None,
        gamma: float = 0.1,
    ) -> None:
        every = every_epochs is not None and every_epochs >= 1 and at_epochs is None
        at = bool(at_epochs) and every_epochs is None and at_epochs[0] >= 1 and at_epochs == sorted(set(at_epochs))
        if not every and not at:
            raise UserInputError(
                "model.lr_scheduler Steps drops the learning rate every every_epochs epochs (1 or more) or at each of "
                f"at_epochs (increasing epochs, such as [30, 60]), one of the two; got every_epochs={every_epochs}, "
                f"at_epochs={at_epochs}"
            )
        if not 0 < gamma < 1:
            raise UserInputError(f"model.lr_scheduler.gamma must lie in (0, 1), got {gamma}")
        self.every_epochs, self.at_epochs, self.gamma = every_epochs, at_epochs, gamma
        super().__init__(optimizer)

    def counts_epochs(self) -> bool:
        return True

    def settings(self, per_epoch: int) -> dict[str, Any]:
        return {
            "gamma": self.gamma,
            "step_every": (self.every_epochs or 0) * per_epoch,
            "milestones": [epoch * per_epoch for epoch in self.at_epochs or []],
        }


# -- the run's steps -------------------------------------------------------------------------------------------------


def _training_batches(trainer: L.Trainer) -> int:
    """Training batches per epoch on this process. With ``max_steps``, Lightning has not counted them when the
    optimizers are configured: they are counted here from the loader, with ``limit_train_batches`` applied as
    Lightning applies it (a fraction of them, or at most that many)."""
    if not math.isinf(trainer.num_training_batches):
        return trainer.num_training_batches
    source = trainer.datamodule if trainer.datamodule is not None else trainer.lightning_module
    return limited(len(source.train_dataloader()), trainer.limit_train_batches)


def limited(batches: int, limit: int | float) -> int:
    """``limit_train_batches`` applied as Lightning applies it: a fraction of the batches, or at most that many."""
    return int(batches * limit) if isinstance(limit, float) else min(batches, limit)


def steps_per_epoch(trainer: L.Trainer) -> int:
    """Optimizer steps in one epoch (known once the training data is)."""
    return math.ceil(_training_batches(trainer) / trainer.accumulate_grad_batches)


def steps_before_fit(trainer: L.Trainer, data: L.LightningDataModule) -> RunSteps:
    """The optimizer steps of the whole run and of one epoch, counted before ``Trainer.fit`` as Lightning's
    ``estimated_stepping_batches`` will count them, from ``data`` (set up). Not yet attached to ``trainer``, its loader
    goes over all of its data; each of ``world_size`` processes will take ``ceil(n / world_size)`` of its ``n``
    batches, since ``ceil(ceil(N / B) / W) == ceil(ceil(N / W) / B)``. An endless run counts as one more step than
    any warm-up."""
    batches = len(data.train_dataloader())
    if data.trainer is None:
        batches = math.ceil(batches / trainer.world_size)
    per_epoch = math.ceil(limited(batches, trainer.limit_train_batches) / trainer.accumulate_grad_batches)
    if trainer.max_epochs == -1:
        return RunSteps(2**62 if trainer.max_steps == -1 else trainer.max_steps, per_epoch)
    total = per_epoch * max(trainer.max_epochs, 1)
    return RunSteps(total if trainer.max_steps == -1 else min(total, trainer.max_steps), per_epoch)


# -- resume ----------------------------------------------------------------------------------------------------------


@dataclass
class PlannedRun:
    """What a run planned when it configured its optimizer, before a checkpoint restored the optimizer's and
    scheduler's own state: what a resumed run re-plans to (:func:`replan_on_resume`)."""

    lrs: list[float] = field(default_factory=list)
    """The learning rate of each parameter group."""
    steps: int | None = None
    """The optimizer steps the run is to take; recorded in its checkpoints (``lr_plan``)."""
    checkpoint_steps: int | None = None
    """The steps the resumed checkpoint's run was to take: a torch scheduler is not rescaled when they differ."""


def replan_on_resume(optimizer: torch.optim.Optimizer, scheduler: LRScheduler, planned: PlannedRun) -> list[str]:
    """Make a resumed run follow the options it was given rather than the checkpoint's (``planned``: its learning
    rates and steps). The restored optimizer and scheduler are changed in place; nothing is touched when the options
    are those the run started with. Returns what changed."""
    if isinstance(scheduler, PlannedSchedule):
        return scheduler.replan(planned.lrs, planned.steps or 0)
    return carry_on_torch_scheduler(optimizer, scheduler, planned.lrs, planned.steps or 0, planned.checkpoint_steps)

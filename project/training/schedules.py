"""The learning-rate plan: each parameter group's learning rate at every optimizer step, and how a resumed run
re-plans it (docs/schedules.md). Two ways to say it, one at a time:

- ``--model.lr_schedule`` (``none``, ``onecycle``, ``cosine``, ``linear``, ``step``): :class:`LRFactor`, the
  multiplier of the learning rate as a pure function of the optimizer step, carried out by a ``LambdaLR``. Its
  fields are plain values, so the scheduler's state dict is too (``torch.load(weights_only=True)`` reads it) and
  restores the plan exactly. A frozen backbone's factor is 0 for its frozen steps, then follows the same curve.
- ``--model.lr_scheduler``: a ``torch.optim.lr_scheduler`` class and its arguments (LightningCLI's
  ``LRSchedulerCallable``), stepped every ``interval``; its own state dict resumes it exactly, but its arguments (a
  ``T_max``, a ``step_size``) are its own, so a run resumed with another length is not rescaled (a note says so).
  Not with the frozen phase, which is the project's own schedule holding the backbone's rate at exactly 0. Its
  checks, its configuration and its resume: :mod:`project.training.torch_schedulers`.

The warm-up of ``onecycle``, ``cosine`` and ``linear`` is a fraction of each cycle's steps (``warmup_fraction``), or
a number of optimizer steps (``warmup_epochs`` or ``warmup_steps``), which a resumed run of another length keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from project.errors import UserInputError
from project.training.lr_factor import DEFAULT_GAMMA, DEFAULT_WARMUP_FRACTION, SHAPES, LRFactor
from project.training.torch_schedulers import (
    OptimizerFactory,
    SchedulerFactory,
    carry_on_torch_scheduler,
    probe_scheduler,
    torch_scheduler_config,
)

Schedule = Literal["none", "onecycle", "cosine", "linear", "step"]
"""The values of ``--model.lr_schedule``."""


def training_batches(trainer: L.Trainer) -> int:
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
    return math.ceil(training_batches(trainer) / trainer.accumulate_grad_batches)


def frozen_steps(trainer: L.Trainer, freeze_backbone_epochs: int) -> int:
    """Optimizer steps during which the backbone is frozen (known once the training data is)."""
    return freeze_backbone_epochs * steps_per_epoch(trainer) if freeze_backbone_epochs else 0


@dataclass(frozen=True)
class LRPlan:
    """The model's learning-rate options (TaskModule's ``lr_schedule``, ``warmup_fraction``, ``min_lr_fraction``,
    ``lr_gamma``, ``lr_step_epochs``, ``lr_scheduler``, ``lr_scheduler_interval``, ``warmup_epochs``,
    ``warmup_steps``), checked together by :func:`check_plan` and carried out by :func:`scheduler_config`."""

    schedule: str = "none"
    warmup_fraction: float | None = DEFAULT_WARMUP_FRACTION
    """``None`` where the warm-up is given in epochs or steps (:func:`warmup_option`)."""
    min_lr_fraction: float = 0.0
    gamma: float | None = None
    step_epochs: int | list[int] | None = None
    """``step``: a drop every N epochs (an integer), or at each of these epochs (a list)."""
    scheduler: SchedulerFactory | None = None
    interval: str = "epoch"
    warmup_epochs: int | None = None
    warmup_steps: int | None = None

    def warmup_in_steps(self, per_epoch: int) -> int:
        """The warm-up in optimizer steps where it is given in epochs (of ``per_epoch`` steps) or steps; 0 where it
        is a fraction of each cycle."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return self.warmup_epochs * per_epoch if self.warmup_epochs is not None else 0

    def factor(self, total_steps: int, per_epoch: int, frozen: int) -> LRFactor:
        """The factor of one parameter group over a run of ``total_steps`` steps of ``per_epoch`` steps an epoch,
        frozen for its first ``frozen`` steps: epochs (of ``step``, of a warm-up) become optimizer steps here."""
        return LRFactor(
            total_steps,
            self.schedule,
            self.warmup_fraction or 0.0,
            frozen,
            min_lr_fraction=self.min_lr_fraction,
            gamma=DEFAULT_GAMMA if self.gamma is None else self.gamma,
            step_every=self.step_epochs * per_epoch if isinstance(self.step_epochs, int) else 0,
            milestones=[epoch * per_epoch for epoch in self.step_epochs] if isinstance(self.step_epochs, list) else [],
            warmup_steps=self.warmup_in_steps(per_epoch),
        )


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


def warmup_option(fraction: float | None, epochs: int | None, steps: int | None) -> float | None:
    """The ``warmup_fraction`` a model records: the one given; :data:`DEFAULT_WARMUP_FRACTION` where the warm-up is
    given no way; ``None`` where it is given in epochs or steps. The warm-up is given one way at a time."""
    given = [
        f"model.{name} {value}"
        for name, value in (("warmup_fraction", fraction), ("warmup_epochs", epochs), ("warmup_steps", steps))
        if value is not None
    ]
    if len(given) > 1:
        raise UserInputError(
            f"the warm-up is given {len(given)} ways ({', '.join(given)}): give one of model.warmup_fraction (of "
            "the run's steps), model.warmup_epochs and model.warmup_steps (a config that sets another: "
            "--model.warmup_fraction null, or --model.warmup_epochs null)"
        )
    if epochs is None and steps is None:
        return DEFAULT_WARMUP_FRACTION if fraction is None else fraction
    return None


def check_plan(plan: LRPlan, make_optimizer: OptimizerFactory, freeze_backbone_epochs: int) -> None:
    """Refuse learning-rate options that cannot work or would not take effect, naming the value and what is allowed."""
    check_warmup(plan)
    if not 0 <= plan.min_lr_fraction < 1:
        raise UserInputError(f"model.min_lr_fraction must lie in [0, 1), got {plan.min_lr_fraction}")
    if plan.min_lr_fraction and plan.schedule not in ("cosine", "linear"):
        raise UserInputError(
            f"model.min_lr_fraction is the floor of lr_schedule cosine and linear, not of lr_schedule {plan.schedule}"
        )
    check_step_options(plan)
    if plan.scheduler is not None:
        check_scheduler(plan, make_optimizer, freeze_backbone_epochs)


def check_warmup(plan: LRPlan) -> None:
    """A fraction in (0, 1), or a whole number of epochs or steps (1 or more) of a schedule with a warm-up."""
    if plan.warmup_fraction is not None and not 0 < plan.warmup_fraction < 1:
        raise UserInputError(f"model.warmup_fraction must lie in (0, 1), got {plan.warmup_fraction}")
    for name, value in (("warmup_epochs", plan.warmup_epochs), ("warmup_steps", plan.warmup_steps)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"model.{name} must be a whole number, 1 or more, got {value!r}")
        if plan.schedule not in SHAPES:
            raise UserInputError(
                f"model.{name} is the warm-up of lr_schedule onecycle, cosine and linear, not of lr_schedule "
                f"{plan.schedule}{' (nor of model.lr_scheduler)' if plan.scheduler is not None else ''}"
            )


def check_warmup_fits(plan: LRPlan, trainer: L.Trainer, total_steps: float, per_epoch: int) -> None:
    """Refuse a warm-up in epochs or steps that would not end before the run's ``total_steps`` do (a run of
    ``per_epoch`` optimizer steps an epoch). Not under ``fast_dev_run``, whose one step tries the code, not the plan."""
    warmup = plan.warmup_in_steps(per_epoch)
    if not warmup or warmup < total_steps or trainer.fast_dev_run:
        return
    if plan.warmup_epochs is not None:
        given = f"model.warmup_epochs {plan.warmup_epochs} is {warmup} optimizer steps (epochs of {per_epoch})"
    else:
        given = f"model.warmup_steps {warmup}"
    raise UserInputError(
        f"{given}, and the whole run is {total_steps} (trainer.max_epochs {trainer.max_epochs}, max_steps "
        f"{trainer.max_steps}): the warm-up must end before the run does; give a shorter warm-up or a longer run"
    )


def check_warmup_before_fit(plan: LRPlan, trainer: L.Trainer, data: L.LightningDataModule) -> None:
    """:func:`check_warmup_fits` before ``Trainer.fit`` writes anything (the command line's check), the run's steps
    counted by :func:`steps_before_fit`; nothing to count for a warm-up that is a fraction."""
    if plan.warmup_epochs is not None or plan.warmup_steps is not None:
        check_warmup_fits(plan, trainer, *steps_before_fit(trainer, data))


def steps_before_fit(trainer: L.Trainer, data: L.LightningDataModule) -> tuple[float, int]:
    """The optimizer steps of the whole run and of one epoch, counted before ``Trainer.fit`` as Lightning's
    ``estimated_stepping_batches`` will count them, from ``data`` (set up). Not yet attached to ``trainer``, its loader
    goes over all of its data; each of ``world_size`` processes will take ``ceil(n / world_size)`` of its ``n``
    batches, since ``ceil(ceil(N / B) / W) == ceil(ceil(N / W) / B)``."""
    batches = len(data.train_dataloader())
    if data.trainer is None:
        batches = math.ceil(batches / trainer.world_size)
    per_epoch = math.ceil(limited(batches, trainer.limit_train_batches) / trainer.accumulate_grad_batches)
    if trainer.max_epochs == -1:
        return (math.inf if trainer.max_steps == -1 else trainer.max_steps), per_epoch
    total = per_epoch * max(trainer.max_epochs, 1)
    return (total if trainer.max_steps == -1 else min(total, trainer.max_steps)), per_epoch


def check_step_options(plan: LRPlan) -> None:
    """``lr_step_epochs`` (needed) and ``lr_gamma`` are the ``step`` schedule's, and no other schedule's."""
    named = [
        name for name, value in (("lr_gamma", plan.gamma), ("lr_step_epochs", plan.step_epochs)) if value is not None
    ]
    if plan.schedule != "step":
        if named:
            raise UserInputError(f"model.{named[0]} is an option of lr_schedule step, not of {plan.schedule}")
        return
    epochs = plan.step_epochs
    every = isinstance(epochs, int) and epochs >= 1
    if not every and not (isinstance(epochs, list) and epochs and epochs[0] >= 1 and epochs == sorted(set(epochs))):
        raise UserInputError(
            "model.lr_schedule step drops the learning rate every model.lr_step_epochs epochs (an integer, 1 or more) "
            f"or at each of them (a list of increasing epochs, such as [30, 60]); got {epochs}"
        )
    if plan.gamma is not None and not 0 < plan.gamma < 1:
        raise UserInputError(f"model.lr_gamma must lie in (0, 1), got {plan.gamma}")


def check_scheduler(plan: LRPlan, make_optimizer: OptimizerFactory, freeze_backbone_epochs: int) -> None:
    """Refuse a torch scheduler that cannot be used here: with the project's own schedule or the frozen phase, at
    an unknown interval, or one that its probe on stand-in parameter groups refuses
    (:func:`~project.training.torch_schedulers.probe_scheduler`)."""
    if plan.schedule != "none":
        raise UserInputError(
            f"model.lr_scheduler and model.lr_schedule {plan.schedule} would both set the learning rate: add "
            "--model.lr_schedule none (the base preset sets onecycle), or leave model.lr_scheduler out"
        )
    if freeze_backbone_epochs:
        raise UserInputError(
            "model.lr_scheduler cannot be combined with model.freeze_backbone_epochs (the frozen phase is the "
            "project's own schedule, holding the backbone's learning rate at 0): use --model.lr_schedule cosine, "
            "linear, step or onecycle, which compose with it"
        )
    if plan.interval not in ("step", "epoch"):
        raise UserInputError(f"model.lr_scheduler_interval must be step or epoch, got {plan.interval!r}")
    probe_scheduler(plan.scheduler, make_optimizer, plan.interval)


def scheduler_config(
    optimizer: torch.optim.Optimizer,
    trainer: L.Trainer,
    plan: LRPlan,
    freeze_backbone_epochs: int,
    monitor: tuple[str, str],
) -> dict[str, Any]:
    """Lightning's scheduler configuration for ``optimizer`` under ``plan``: the project's schedule (a ``LambdaLR``
    of one :class:`LRFactor` per parameter group, the backbone's frozen at first), stepped every optimizer step; or
    the torch scheduler (:func:`~project.training.torch_schedulers.torch_scheduler_config`: ``monitor`` is the
    model's metric and its direction, for ``ReduceLROnPlateau``)."""
    if plan.scheduler is None:
        total = int(trainer.estimated_stepping_batches)
        fixed_warmup = plan.warmup_epochs is not None or plan.warmup_steps is not None
        per_epoch = steps_per_epoch(trainer) if plan.schedule == "step" or fixed_warmup else 0
        check_warmup_fits(plan, trainer, total, per_epoch)
        frozen = frozen_steps(trainer, freeze_backbone_epochs)
        factors = [
            plan.factor(total, per_epoch, frozen if group.get("name") == "backbone" else 0)
            for group in optimizer.param_groups
        ]
        return {"scheduler": LambdaLR(optimizer, lr_lambda=factors), "interval": "step"}
    config, note = torch_scheduler_config(optimizer, plan.scheduler, plan.interval, monitor)
    if note is not None:
        rank_zero_info(note)
    return config


# -- resume ----------------------------------------------------------------------------------------------------------


def replan_on_resume(
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    base_lrs: list[float],
    total_steps: int,
    planned_steps: int | None = None,
) -> list[str]:
    """Make a resumed run follow the options it was given rather than the checkpoint's: the learning rate of each
    parameter group (``base_lrs``) and the number of steps the run is to take (``planned_steps``: the checkpoint's).
    The restored optimizer and scheduler are changed in place; nothing is touched when the options are those the run
    started with. Returns what changed."""
    if isinstance(scheduler, LambdaLR) and all(isinstance(factor, LRFactor) for factor in scheduler.lr_lambdas):
        return replan_factors(optimizer, scheduler, base_lrs, total_steps)
    return carry_on_torch_scheduler(optimizer, scheduler, base_lrs, total_steps, planned_steps)


def replan_factors(
    optimizer: torch.optim.Optimizer, scheduler: LambdaLR, base_lrs: list[float], total_steps: int
) -> list[str]:
    """:func:`replan_on_resume` of the project's schedule: a new learning rate scales the whole plan; a shape is
    stretched (or squeezed) to end at ``total_steps``; ``step`` keeps its drops where they were."""
    step = scheduler.last_epoch
    notes = []
    for index, (group, factor) in enumerate(zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True)):
        name = group.get("name", str(index))
        changed = False
        if scheduler.base_lrs[index] != base_lrs[index]:
            notes.append(f"{name} learning rate {base_lrs[index]:g} (was {scheduler.base_lrs[index]:g})")
            scheduler.base_lrs[index] = group["initial_lr"] = base_lrs[index]
            changed = True
        planned = factor.end_step(step)
        if factor.schedule in SHAPES and total_steps > step and planned != total_steps:
            notes.append(
                f"{name}: the run now ends at step {total_steps} (planned: {planned}); "
                f"{factor.replan(step, total_steps)}"
            )
            changed = True
        elif factor.schedule == "step" and planned != total_steps:
            factor.total_steps = total_steps
            notes.append(f"{name}: the run now ends at step {total_steps}; the step schedule keeps its drops")
        if changed:
            group["lr"] = scheduler.base_lrs[index] * factor(step)
    return notes

"""The learning-rate plan: each parameter group's learning rate at every optimizer step, and how a resumed run
re-plans it (docs/schedules.md). Two ways to say it, one at a time:

- ``--model.lr_schedule`` (``none``, ``onecycle``, ``cosine``, ``linear``, ``step``): :class:`LRFactor`, the
  multiplier of the learning rate as a pure function of the optimizer step, carried out by a ``LambdaLR``. Its
  fields are plain values, so the scheduler's state dict is too (``torch.load(weights_only=True)`` reads it) and
  restores the plan exactly. A frozen backbone's factor is 0 for its frozen steps, then follows the same curve.
- ``--model.lr_scheduler``: a ``torch.optim.lr_scheduler`` class and its arguments (LightningCLI's
  ``LRSchedulerCallable``), stepped every ``interval``; its own state dict resumes it exactly, but its arguments (a
  ``T_max``, a ``step_size``) are its own, so a run resumed with another length is not rescaled (a note says so).
  Not with the frozen phase, which is the project's own schedule holding the backbone's rate at exactly 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from project.errors import UserInputError, first_line

Schedule = Literal["none", "onecycle", "cosine", "linear", "step"]
"""The values of ``--model.lr_schedule``."""
SchedulerFactory = Callable[[torch.optim.Optimizer], LRScheduler]
"""What LightningCLI's ``LRSchedulerCallable`` is: an optimizer in, a scheduler out."""
OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
"""What LightningCLI's ``OptimizerCallable`` is: parameter groups in, an optimizer out."""


def training_batches(trainer: L.Trainer) -> int:
    """Training batches per epoch on this process. With ``max_steps``, Lightning has not counted them when the
    optimizers are configured: they are counted here from the loader, with ``limit_train_batches`` applied as
    Lightning applies it (a fraction of them, or at most that many)."""
    if not math.isinf(trainer.num_training_batches):
        return trainer.num_training_batches
    source = trainer.datamodule if trainer.datamodule is not None else trainer.lightning_module
    batches, limit = len(source.train_dataloader()), trainer.limit_train_batches
    return int(batches * limit) if isinstance(limit, float) else min(batches, limit)


def steps_per_epoch(trainer: L.Trainer) -> int:
    """Optimizer steps in one epoch (known once the training data is)."""
    return math.ceil(training_batches(trainer) / trainer.accumulate_grad_batches)


def frozen_steps(trainer: L.Trainer, freeze_backbone_epochs: int) -> int:
    """Optimizer steps during which the backbone is frozen (known once the training data is)."""
    return freeze_backbone_epochs * steps_per_epoch(trainer) if freeze_backbone_epochs else 0


# -- the shapes, as functions of where a step is read on a cycle -----------------------------------------------------


def one_cycle(position: float, cycle_steps: int, warmup_fraction: float) -> float:
    """torch's OneCycleLR shape at ``position`` of a cycle of ``cycle_steps`` steps: a cosine warm-up from 1/25 to 1
    over the first ``warmup_fraction``, then a cosine decay to 1/250,000 at the cycle's last step."""
    start, end = 1 / 25, 1 / 250_000
    warmup = max(1, int(warmup_fraction * cycle_steps))
    if position < warmup:
        return start + (1 - start) * (1 - math.cos(math.pi * position / warmup)) / 2
    progress = min(1.0, (position - warmup) / max(1, cycle_steps - 1 - warmup))
    return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2


def warmup_then_decay(
    position: float, cycle_steps: int, warmup_fraction: float, min_fraction: float, decay: Callable[[float], float]
) -> float:
    """A linear warm-up from 0 to 1 over the first ``int(warmup_fraction * cycle_steps)`` steps, then ``decay`` of
    the progress (1 at 0, 0 at 1) between 1 and ``min_fraction``; the progress is 1 at position ``cycle_steps``, one
    past the cycle's last step. Hugging Face's ``get_cosine_schedule_with_warmup`` and
    ``get_linear_schedule_with_warmup`` formulas, with a floor."""
    warmup = int(warmup_fraction * cycle_steps)
    if position < warmup:
        return position / warmup
    progress = min(1.0, (position - warmup) / max(1, cycle_steps - warmup))
    return min_fraction + (1 - min_fraction) * decay(progress)


def stepped(step: int, gamma: float, every: int, milestones: list[int]) -> float:
    """``gamma`` to the power of the drops before ``step``: one every ``every`` steps, or one at each milestone."""
    drops = step // every if every else sum(step >= milestone for milestone in milestones)
    return gamma**drops


SHAPES: dict[str, Callable[[float, int, float, float], float]] = {
    "onecycle": lambda at, cycle, warmup, floor: one_cycle(at, cycle, warmup),
    "cosine": lambda at, cycle, warmup, floor: warmup_then_decay(at, cycle, warmup, floor, half_cosine),
    "linear": lambda at, cycle, warmup, floor: warmup_then_decay(
        at, cycle, warmup, floor, lambda progress: 1 - progress
    ),
}
"""The schedules that are a shape over the run's steps (so a run of another length rescales them): the factor at a
position of a cycle of some steps, given the warm-up fraction and the floor."""


def half_cosine(progress: float) -> float:
    """1 at 0, down a half cosine to 0 at 1."""
    return (1 + math.cos(math.pi * progress)) / 2


DEFAULT_GAMMA = 0.1
"""``step``'s multiplier at each drop when ``lr_gamma`` is not given (torch's StepLR default)."""


@dataclass
class LRFactor:
    """The multiplier of a parameter group's learning rate at an optimizer step.

    ``schedule`` is ``none`` (1 throughout), a shape of :data:`SHAPES` over ``total_steps`` (``onecycle``, ``cosine``,
    ``linear``), or ``step`` (:func:`stepped`: ``gamma`` at every drop). The factor is 0 for the first
    ``frozen_steps`` steps. A resumed run that is to end at another step re-plans what is left of a shape
    (:meth:`replan`); each re-planning is one entry of ``changes``. Plain fields, so the scheduler's state dict
    stays plain values.
    """

    total_steps: int
    schedule: str = "none"
    warmup_fraction: float = 0.25
    frozen_steps: int = 0
    changes: list[list[float]] = field(default_factory=list)
    """``[step, position, rate, cycle_steps]``: from ``step`` on, the factor is read at ``position + (s - step) *
    rate`` of a cycle of ``cycle_steps`` steps."""
    min_lr_fraction: float = 0.0
    """``cosine`` and ``linear`` end at this fraction of the learning rate."""
    gamma: float = DEFAULT_GAMMA
    step_every: int = 0
    """``step``: optimizer steps between drops (0: the drops are at ``milestones``)."""
    milestones: list[int] = field(default_factory=list)
    """``step``: the optimizer steps at which the learning rate is multiplied by ``gamma``."""

    def position(self, step: int) -> tuple[float, int]:
        """Where step ``step`` is read on the cycle, and the cycle's length."""
        position, cycle = float(step), self.total_steps
        for start, start_position, rate, cycle_steps in self.changes:
            if step >= start:
                position, cycle = start_position + (step - start) * rate, int(cycle_steps)
        return position, cycle

    def __call__(self, step: int) -> float:
        if step < self.frozen_steps:
            return 0.0
        if self.schedule == "none":
            return 1.0
        if self.schedule == "step":
            return stepped(step, self.gamma, self.step_every, self.milestones)
        return SHAPES[self.schedule](*self.position(step), self.warmup_fraction, self.min_lr_fraction)

    def end_step(self, step: int) -> int:
        """The step at which the plan in force at ``step`` ends."""
        end = float(self.total_steps)
        for start, start_position, rate, cycle_steps in self.changes:
            if step >= start:
                end = start + (cycle_steps - start_position) / rate
        return round(end)

    def replan(self, step: int, total_steps: int) -> str:
        """End the schedule at ``total_steps`` instead, from ``step`` on; say what was done.

        What is left of the shape (the rest of the warm-up, if any, and of the decay) is stretched (or squeezed) over
        the steps that are left, so the learning rate goes on from where it was. A shape that has already ended
        starts again over the extra steps: warm-up, peak, decay, as a new schedule (a warm restart).
        """
        name = "one-cycle" if self.schedule == "onecycle" else self.schedule
        position, cycle = self.position(step)
        if position >= cycle - 1:
            self.changes.append([step, 0.0, 1.0, total_steps - step])
            return f"the {name} schedule had ended, so steps {step}..{total_steps - 1} get a new cycle"
        self.changes.append([step, position, (cycle - position) / (total_steps - step), cycle])
        return f"what was left of the {name} schedule is stretched over steps {step}..{total_steps - 1}"


@dataclass(frozen=True)
class LRPlan:
    """The model's learning-rate options (TaskModule's ``lr_schedule``, ``warmup_fraction``, ``min_lr_fraction``,
    ``lr_gamma``, ``lr_step_epochs``, ``lr_scheduler``, ``lr_scheduler_interval``), checked together by
    :func:`check_plan` and carried out by :func:`scheduler_config`."""

    schedule: str = "none"
    warmup_fraction: float = 0.25
    min_lr_fraction: float = 0.0
    gamma: float | None = None
    step_epochs: int | list[int] | None = None
    """``step``: a drop every N epochs (an integer), or at each of these epochs (a list)."""
    scheduler: SchedulerFactory | None = None
    interval: str = "epoch"

    def factor(self, total_steps: int, per_epoch: int, frozen: int) -> LRFactor:
        """The factor of one parameter group over a run of ``total_steps`` steps of ``per_epoch`` steps an epoch,
        frozen for its first ``frozen`` steps: the ``step`` schedule's epochs become optimizer steps here."""
        return LRFactor(
            total_steps,
            self.schedule,
            self.warmup_fraction,
            frozen,
            min_lr_fraction=self.min_lr_fraction,
            gamma=DEFAULT_GAMMA if self.gamma is None else self.gamma,
            step_every=self.step_epochs * per_epoch if isinstance(self.step_epochs, int) else 0,
            milestones=[epoch * per_epoch for epoch in self.step_epochs] if isinstance(self.step_epochs, list) else [],
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


def check_plan(plan: LRPlan, make_optimizer: OptimizerFactory, freeze_backbone_epochs: int) -> None:
    """Refuse learning-rate options that cannot work or would not take effect, naming the value and what is allowed."""
    if not 0 < plan.warmup_fraction < 1:
        raise UserInputError(f"model.warmup_fraction must lie in (0, 1), got {plan.warmup_fraction}")
    if not 0 <= plan.min_lr_fraction < 1:
        raise UserInputError(f"model.min_lr_fraction must lie in [0, 1), got {plan.min_lr_fraction}")
    if plan.min_lr_fraction and plan.schedule not in ("cosine", "linear"):
        raise UserInputError(
            f"model.min_lr_fraction is the floor of lr_schedule cosine and linear, not of lr_schedule {plan.schedule}"
        )
    check_step_options(plan)
    if plan.scheduler is not None:
        check_scheduler(plan, make_optimizer, freeze_backbone_epochs)


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
    """Refuse a torch scheduler that cannot be used here. It is built once on stand-in parameter groups (the
    backbone's and the head's), so that an argument it refuses stops the run before it starts."""
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
    groups = [{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(2)]
    try:
        probe = plan.scheduler(make_optimizer(groups))
    except (TypeError, ValueError, KeyError) as error:
        raise UserInputError(f"model.lr_scheduler: {first_line(error)}") from None
    if not isinstance(probe, LRScheduler):
        raise UserInputError(
            f"model.lr_scheduler must build a torch.optim.lr_scheduler.LRScheduler, got a {type(probe).__name__}"
        )
    if isinstance(probe, ReduceLROnPlateau) and plan.interval != "epoch":
        raise UserInputError(
            "model.lr_scheduler ReduceLROnPlateau follows a validation metric: it takes "
            "model.lr_scheduler_interval epoch, not step"
        )


def scheduler_config(
    optimizer: torch.optim.Optimizer,
    trainer: L.Trainer,
    plan: LRPlan,
    freeze_backbone_epochs: int,
    monitor: tuple[str, str],
) -> dict[str, Any]:
    """Lightning's scheduler configuration for ``optimizer`` under ``plan``: the project's schedule (a ``LambdaLR``
    of one :class:`LRFactor` per parameter group, the backbone's frozen at first), stepped every optimizer step; or
    the torch scheduler, stepped every ``plan.interval``, a ``ReduceLROnPlateau`` following ``monitor`` (the model's
    metric and whether higher or lower is better: its ``mode``)."""
    if plan.scheduler is None:
        total = int(trainer.estimated_stepping_batches)
        per_epoch = steps_per_epoch(trainer) if plan.schedule == "step" else 0
        frozen = frozen_steps(trainer, freeze_backbone_epochs)
        factors = [
            plan.factor(total, per_epoch, frozen if group.get("name") == "backbone" else 0)
            for group in optimizer.param_groups
        ]
        return {"scheduler": LambdaLR(optimizer, lr_lambda=factors), "interval": "step"}
    for group in optimizer.param_groups:  # what a resumed run compares its learning rates with
        group.setdefault("initial_lr", group["lr"])
    scheduler = plan.scheduler(optimizer)
    config: dict[str, Any] = {"scheduler": scheduler, "interval": plan.interval}
    if isinstance(scheduler, ReduceLROnPlateau):
        metric, mode = monitor
        if scheduler.mode != mode:  # the command line fills in mode's default, "min": wrong for val/acc
            scheduler = functools.partial(plan.scheduler, mode=mode)(optimizer)
        config.update(scheduler=scheduler, monitor=metric)
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


def carry_on_torch_scheduler(
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    base_lrs: list[float],
    total_steps: int,
    planned_steps: int | None,
) -> list[str]:
    """:func:`replan_on_resume` of a torch scheduler: a new learning rate multiplies the group's current and base
    learning rates by new / old (the scheduler goes on from its step, scaled); another length is not rescaled, since
    the scheduler's arguments are its own, and a note says so."""
    notes = []
    kind = type(scheduler).__name__
    for index, group in enumerate(optimizer.param_groups):
        old, new = group["initial_lr"], base_lrs[index]
        if old != new:
            group["lr"] *= new / old
            group["initial_lr"] = new
            if not isinstance(scheduler, ReduceLROnPlateau):  # the one torch scheduler without base rates
                scheduler.base_lrs[index] = new
            notes.append(f"{group.get('name', index)} learning rate {new:g} (was {old:g}): {kind} goes on, scaled")
    if planned_steps is not None and planned_steps != total_steps:
        notes.append(
            f"the run now ends at step {total_steps} (planned: {planned_steps}), but model.lr_scheduler {kind} is "
            "not rescaled: its arguments are its own (use --model.lr_schedule to have the plan follow the run's length)"
        )
    return notes

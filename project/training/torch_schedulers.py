"""``--model.lr_scheduler``: a ``torch.optim.lr_scheduler`` class and its arguments (LightningCLI's
``LRSchedulerCallable``) other than the project's own (:mod:`project.training.schedules`): checked on stand-in
parameter groups before a run starts (:func:`probe_scheduler`), built for the run (:func:`torch_scheduler_config`),
and carried on when a run resumes (:func:`carry_on_torch_scheduler`). Its arguments are its own: nothing here rescales
them.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CyclicLR,
    ExponentialLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)

from project.errors import UserInputError, first_line

SchedulerFactory = Callable[[torch.optim.Optimizer], LRScheduler]
"""What LightningCLI's ``LRSchedulerCallable`` is: an optimizer in, a scheduler out."""
OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
"""What LightningCLI's ``OptimizerCallable`` is: parameter groups in, an optimizer out."""
_FAILURES = (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError)
"""What a scheduler raises for arguments it cannot work with, when it is built or stepped."""
_STEP_ORDER_WARNING = r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"
"""torch warns when a scheduler steps before its optimizer has: the probe steps a scheduler whose optimizer never
steps (its stand-in parameters have no gradients), on purpose."""


def probe_scheduler(make_scheduler: SchedulerFactory, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """Refuse a scheduler that cannot be used here. It is built once on ``optimizer`` (one over stand-in parameter
    groups) and stepped once, so that an argument it refuses, or one that makes it fail at its first step
    (``CosineAnnealingLR`` with ``T_max: 0``), stops the run before it starts; the probe is returned."""
    try:
        probe = make_scheduler(optimizer)
    except UserInputError:  # the project's own schedules check their options themselves
        raise
    except _FAILURES as error:
        raise UserInputError(f"model.lr_scheduler: {first_line(error)}") from None
    if not isinstance(probe, LRScheduler):
        raise UserInputError(
            f"model.lr_scheduler must build a torch.optim.lr_scheduler.LRScheduler, got a {type(probe).__name__}"
        )
    _check_arguments(probe)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_STEP_ORDER_WARNING)
        try:
            if isinstance(probe, ReduceLROnPlateau):
                probe.step(0.0)  # (the metric it follows)
            else:
                probe.step()
        except _FAILURES as error:
            raise UserInputError(
                f"model.lr_scheduler {type(probe).__name__} fails at its first step with these arguments: "
                f"{first_line(error)} ({type(error).__name__})"
            ) from None
    return probe


def _check_arguments(scheduler: LRScheduler) -> None:
    """Refuse arguments torch accepts that cannot work: a multiplier of the learning rate at or below 0 (a negative
    ``gamma`` flips its sign, making every step climb the loss), a period below 1."""
    multiplier = None
    if isinstance(scheduler, StepLR | MultiStepLR | ExponentialLR | CyclicLR):
        multiplier = "gamma", scheduler.gamma
    elif isinstance(scheduler, ReduceLROnPlateau):
        multiplier = "factor", scheduler.factor
    if multiplier is not None and not multiplier[1] > 0:
        name, value = multiplier
        raise UserInputError(
            f"model.lr_scheduler.{name} multiplies the learning rate: {type(scheduler).__name__} takes a {name} "
            f"above 0, got {value}"
        )
    period = None
    if isinstance(scheduler, CosineAnnealingLR):
        period = "T_max", scheduler.T_max
    elif isinstance(scheduler, StepLR):
        period = "step_size", scheduler.step_size
    if period is not None and not period[1] >= 1:
        name, value = period
        raise UserInputError(
            f"model.lr_scheduler.{name} counts {type(scheduler).__name__}'s steps: 1 or more, got {value}"
        )


def torch_scheduler_config(
    scheduler: LRScheduler, make_scheduler: SchedulerFactory, monitor: tuple[str, str], momentum: str
) -> tuple[dict[str, Any], str | None]:
    """Lightning's configuration of a torch scheduler, built by ``make_scheduler``: stepped every epoch (torch's
    convention; ``OneCycleLR`` and ``CyclicLR``, which torch documents as stepped after every batch, every optimizer
    step); a ``ReduceLROnPlateau`` follows ``monitor`` (the model's metric and whether higher or lower is better: its
    ``mode``). With it, a note to say when the scheduler takes over the optimizer's ``momentum`` (:func:`momentum_of`,
    read before the scheduler was built: :func:`_momentum_note`), else ``None``."""
    optimizer = scheduler.optimizer
    for group in optimizer.param_groups:  # what a resumed run compares its learning rates with (ReduceLROnPlateau)
        group.setdefault("initial_lr", group["lr"])
    interval = "step" if isinstance(scheduler, OneCycleLR | CyclicLR) else "epoch"
    config: dict[str, Any] = {"scheduler": scheduler, "interval": interval}
    if isinstance(scheduler, ReduceLROnPlateau):
        metric, mode = monitor
        if scheduler.mode != mode:  # the command line fills in mode's default, "min": wrong for val/acc
            scheduler = functools.partial(make_scheduler, mode=mode)(optimizer)
        config.update(scheduler=scheduler, monitor=metric)
    return config, _momentum_note(scheduler, optimizer, momentum)


def momentum_of(optimizer: torch.optim.Optimizer) -> str:
    """The optimizer's own momentum, as configured (``beta1 0.9``, ``momentum 0``), before a scheduler changes it."""
    group = optimizer.param_groups[0]
    if "betas" in group:
        return f"beta1 {group['betas'][0]:g}"
    return f"momentum {group['momentum']:g}" if "momentum" in group else "no momentum"


def _momentum_note(scheduler: LRScheduler, optimizer: torch.optim.Optimizer, own: str) -> str | None:
    """What ``cycle_momentum`` (torch's default for ``CyclicLR`` and ``OneCycleLR``) does to the optimizer, in one
    line: torch replaces its momentum (SGD, RMSprop; one of 0 is switched on) or its beta1 (Adam, AdamW) by a cycle
    of the scheduler's own ``base_momentum`` and ``max_momentum``; ``None`` for any other scheduler. (An optimizer
    with neither, such as Adagrad, torch refuses: :func:`probe_scheduler` says so.)"""
    if not isinstance(scheduler, CyclicLR | OneCycleLR) or not scheduler.cycle_momentum:
        return None
    kind, cycled = type(optimizer).__name__, "beta1" if scheduler.use_beta1 else "momentum"
    return (
        f"model.lr_scheduler {type(scheduler).__name__} cycles {kind}'s {cycled} between its base_momentum and "
        f"max_momentum, in place of the optimizer's ({own}): torch's cycle_momentum, true by default; "
        "--model.lr_scheduler.cycle_momentum false keeps the optimizer's"
    )


def carry_on_torch_scheduler(
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    base_lrs: list[float],
    total_steps: int,
    planned_steps: int | None,
) -> list[str]:
    """:func:`~project.training.schedules.replan_on_resume` of a torch scheduler: a new learning rate multiplies the
    group's current and base learning rates by new / old (the scheduler goes on from its step, scaled); another
    length is not rescaled, since the scheduler's arguments are its own, and a note says so."""
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
            "not rescaled: its arguments are its own (the project's schedules, such as --model.lr_scheduler Cosine, "
            "follow the run's length)"
        )
    return notes

"""Fine-tuning and the learning-rate plan: load a pretrained backbone, split the network into parameter groups, and
the plan that freezes the backbone, then unfreezes it, under a one-cycle schedule.

Freezing is done with the learning rate, not with ``requires_grad``: the optimizer has two parameter groups from the
first step (``backbone`` and ``head``), and while the backbone is frozen its group's learning rate is exactly 0, so
its weights do not move (AdamW and SGD then add exactly zero). Nothing about the optimizer changes at the milestone,
so a resumed run restores the same groups, and under DDP every process keeps the same set of trainable parameters
(Lightning's ``BackboneFinetuning`` flips ``requires_grad``, which DDP does not see: Lightning issue #20340). The
price is that the frozen backbone's gradients are still computed; for networks of this size that is cheap.

The learning rate of each group at optimizer step ``s`` is ``base_lr * LRFactor(s)``: the whole plan is a function
of the step count, which the scheduler's state in every checkpoint restores exactly. The optimizer itself is
injected (LightningCLI's ``OptimizerCallable``: ``--model.optimizer SGD --model.optimizer.lr 0.01``); the head's
group takes its learning rate, the backbone's ``backbone_lr`` when given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from project.errors import UserInputError, first_line
from project.files.weights import read_weights, state_dict_differences

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
"""What LightningCLI's ``OptimizerCallable`` is: parameter groups in, an optimizer out."""

WRAPPER_PREFIXES = ("_orig_mod.", "module.", "network.", "model.")
"""Prefixes that wrappers add to parameter names: torch.compile, DDP, this project's LightningModule, others."""


def parameter_groups(network: nn.Module, backbone_lr: float | None) -> list[dict[str, Any]]:
    """``backbone`` and ``head`` parameter groups of the parameters that train (with LoRA, the backbone's are its
    adapters); the backbone's has its own learning rate when one is given."""

    def trained(module: nn.Module) -> list[nn.Parameter]:
        return [parameter for parameter in module.parameters() if parameter.requires_grad]

    backbone = {"name": "backbone", "params": trained(network.backbone)}
    return [
        {**backbone, "lr": backbone_lr} if backbone_lr else backbone,
        {"name": "head", "params": trained(network.head)},
    ]


def training_batches(trainer: L.Trainer) -> int:
    """Training batches per epoch on this process. With ``max_steps``, Lightning has not counted them when the
    optimizers are configured: they are counted here from the loader, with ``limit_train_batches`` applied as
    Lightning applies it (a fraction of them, or at most that many)."""
    if not math.isinf(trainer.num_training_batches):
        return trainer.num_training_batches
    source = trainer.datamodule if trainer.datamodule is not None else trainer.lightning_module
    batches, limit = len(source.train_dataloader()), trainer.limit_train_batches
    return int(batches * limit) if isinstance(limit, float) else min(batches, limit)


def frozen_steps(trainer: L.Trainer, freeze_backbone_epochs: int) -> int:
    """Optimizer steps during which the backbone is frozen (known once the training data is)."""
    if not freeze_backbone_epochs:
        return 0
    steps_per_epoch = math.ceil(training_batches(trainer) / trainer.accumulate_grad_batches)
    return freeze_backbone_epochs * steps_per_epoch


def build_optimization(
    network: nn.Module,
    make_optimizer: OptimizerFactory,
    trainer: L.Trainer,
    lr_schedule: str,
    warmup_fraction: float,
    freeze_backbone_epochs: int,
    backbone_lr: float | None,
    lr_scale: float = 1.0,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over the network's parameter groups (their learning rates times ``lr_scale``), and the
    scheduler that carries out the plan, stepped once per optimizer step."""
    optimizer = make_optimizer(parameter_groups(network, backbone_lr))
    for group in optimizer.param_groups:
        group["lr"] *= lr_scale
    total_steps = int(trainer.estimated_stepping_batches)
    frozen = frozen_steps(trainer, freeze_backbone_epochs)
    factors = [
        LRFactor(total_steps, lr_schedule, warmup_fraction, frozen_steps=frozen if group["name"] == "backbone" else 0)
        for group in optimizer.param_groups
    ]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factors)


def check_optimizer(make_optimizer: OptimizerFactory) -> None:
    """Build the optimizer once on a stand-in parameter, so that a value it refuses stops the run before it starts."""
    try:
        probe = make_optimizer([torch.zeros(1, requires_grad=True)])
    except (TypeError, ValueError) as error:
        raise UserInputError(f"model.optimizer: {first_line(error)}") from None
    lr = probe.defaults.get("lr")
    if isinstance(lr, float | int) and not (math.isfinite(lr) and lr > 0):
        raise UserInputError(f"model.optimizer.lr must be a positive finite number, got {lr}")


def check_finetuning(freeze_backbone_epochs: int, backbone_lr: float | None) -> None:
    """Refuse fine-tuning settings that cannot work, naming the value and what is allowed."""
    if freeze_backbone_epochs < 0:
        raise UserInputError(f"model.freeze_backbone_epochs must be 0 or more, got {freeze_backbone_epochs}")
    if backbone_lr is not None and not (math.isfinite(backbone_lr) and backbone_lr > 0):
        raise UserInputError(f"model.backbone_lr must be a positive finite number, got {backbone_lr}")


def one_cycle(position: float, cycle_steps: int, warmup_fraction: float) -> float:
    """torch's OneCycleLR shape at ``position`` of a cycle of ``cycle_steps`` steps: a cosine warm-up from 1/25 to 1
    over the first ``warmup_fraction``, then a cosine decay to 1/250,000 at the cycle's last step."""
    start, end = 1 / 25, 1 / 250_000
    warmup = max(1, int(warmup_fraction * cycle_steps))
    if position < warmup:
        return start + (1 - start) * (1 - math.cos(math.pi * position / warmup)) / 2
    progress = min(1.0, (position - warmup) / max(1, cycle_steps - 1 - warmup))
    return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2


@dataclass
class LRFactor:
    """The multiplier of a parameter group's learning rate at an optimizer step.

    ``schedule`` is ``none`` (1 throughout) or ``onecycle`` (:func:`one_cycle` over ``total_steps``). The factor is 0
    for the first ``frozen_steps`` steps. A resumed run that is to end at another step re-plans what is left
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
        return one_cycle(*self.position(step), self.warmup_fraction)

    def end_step(self, step: int) -> int:
        """The step at which the plan in force at ``step`` ends."""
        end = float(self.total_steps)
        for start, start_position, rate, cycle_steps in self.changes:
            if step >= start:
                end = start + (cycle_steps - start_position) / rate
        return round(end)

    def replan(self, step: int, total_steps: int) -> str:
        """End the schedule at ``total_steps`` instead, from ``step`` on; say what was done.

        What is left of the cycle is stretched (or squeezed) over the steps that are left, so the learning rate goes
        on from where it was. A cycle that has already ended starts again over the extra steps: warm-up, peak,
        anneal, as a new one-cycle schedule (a warm restart).
        """
        position, cycle = self.position(step)
        if position >= cycle - 1:
            self.changes.append([step, 0.0, 1.0, total_steps - step])
            return f"the one-cycle schedule had ended, so steps {step}..{total_steps - 1} get a new cycle"
        self.changes.append([step, position, (cycle - position) / (total_steps - step), cycle])
        return f"what was left of the one-cycle schedule is stretched over steps {step}..{total_steps - 1}"


def replan_on_resume(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    base_lrs: list[float],
    total_steps: int,
) -> list[str]:
    """Make a resumed run follow the options it was given rather than the checkpoint's: the learning rate of each
    parameter group (``base_lrs``) and the number of steps the run is to take. The restored optimizer and scheduler
    are changed in place; nothing is touched when the options are those the run started with. Returns what changed.
    """
    step = scheduler.last_epoch
    notes = []
    for index, (group, factor) in enumerate(zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True)):
        name = group.get("name", str(index))
        changed = False
        if scheduler.base_lrs[index] != base_lrs[index]:
            notes.append(f"{name} learning rate {base_lrs[index]:g} (was {scheduler.base_lrs[index]:g})")
            scheduler.base_lrs[index] = group["initial_lr"] = base_lrs[index]
            changed = True
        replannable = isinstance(factor, LRFactor) and factor.schedule != "none" and total_steps > step
        if replannable and factor.end_step(step) != total_steps:
            planned = factor.end_step(step)
            notes.append(
                f"{name}: the run now ends at step {total_steps} (planned: {planned}); "
                f"{factor.replan(step, total_steps)}"
            )
            changed = True
        if changed:
            group["lr"] = scheduler.base_lrs[index] * factor(step)
    return notes


def strip_wrapper_prefixes(name: str) -> str:
    """``_orig_mod.network.backbone.0.weight`` -> ``backbone.0.weight``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def load_pretrained_backbone(network: nn.Module, path: str | Path) -> str:
    """Copy the backbone tensors of ``path`` into ``network.backbone``; return a one-paragraph summary.

    The backbone must match exactly (same names and shapes), otherwise nothing is loaded and the error lists the
    offending keys. The head is never loaded: the network keeps its freshly initialised head, sized for the new task.
    """
    weights = {strip_wrapper_prefixes(name): tensor for name, tensor in read_weights(path).items()}
    source = {name.removeprefix("backbone."): t for name, t in weights.items() if name.startswith("backbone.")}
    differences = state_dict_differences(network.backbone.state_dict(), source)
    if not source or differences:
        problems = []
        if not source:
            problems.append(f"no backbone.* tensors in {path} (its keys start: {', '.join(sorted(weights)[:6])})")
        for label, found in (
            ("missing from the checkpoint", differences.missing),
            ("not in the network", differences.unexpected),
        ):
            if found:
                problems.append(f"{label}: {', '.join('backbone.' + name for name in found)}")
        for label, found in (("different shapes", differences.shapes), ("other kinds of values", differences.kinds)):
            if found:
                problems.append(f"{label}: {'; '.join('backbone.' + item for item in found)}")
        raise UserInputError(
            f"model.pretrained {path}: its backbone does not match this network's (a different architecture?).\n  "
            + "\n  ".join(problems)
        )
    network.backbone.load_state_dict(source)
    skipped = sorted(set(weights) - {f"backbone.{name}" for name in source})
    head = network.head
    return (
        f"Loaded {len(source)} backbone tensors from {path}; not loaded: {', '.join(skipped) or 'nothing'}. "
        f"The head is new: {head.in_features} -> {head.out_features}."
    )

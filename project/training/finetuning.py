"""Fine-tuning: load a pretrained backbone, split the network into parameter groups, and freeze the backbone for its
first epochs.

Freezing is done with the learning rate, not with ``requires_grad``: the optimizer has two parameter groups from the
first step (``backbone`` and ``head``), and while the backbone is frozen its group's learning rate is exactly 0, so
its weights do not move (AdamW and SGD then add exactly zero). Nothing about the optimizer changes at the milestone,
so a resumed run restores the same groups, and under DDP every process keeps the same set of trainable parameters
(Lightning's ``BackboneFinetuning`` flips ``requires_grad``, which DDP does not see: Lightning issue #20340). The
price is that the frozen backbone's gradients are still computed; for networks of this size that is cheap.

The learning rate of each group at optimizer step ``s`` is ``base_lr * LRFactor(s)``
(:mod:`project.training.schedules`, where the learning-rate plan lives; its names still import from here): the
frozen phase is part of that plan, a function of the step count, which the scheduler's state in every checkpoint
restores exactly. The optimizer itself is injected (LightningCLI's ``OptimizerCallable``: ``--model.optimizer SGD
--model.optimizer.lr 0.01``); the head's group takes its learning rate, the backbone's ``backbone_lr`` when given.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from project.errors import UserInputError, first_line
from project.files.weights import read_weights, state_dict_differences

# The learning-rate plan lived here: its names still import from here.
from project.training.lr_factor import LRFactor, one_cycle
from project.training.schedules import (
    LRPlan,
    OptimizerFactory,
    check_plan,
    frozen_steps,
    replan_on_resume,
    scheduler_config,
    training_batches,
)

__all__ = [
    "LRFactor",
    "LRPlan",
    "OptimizerFactory",
    "build_optimization",
    "check_finetuning",
    "check_optimization",
    "check_optimizer",
    "frozen_steps",
    "load_pretrained_backbone",
    "one_cycle",
    "parameter_groups",
    "replan_on_resume",
    "strip_wrapper_prefixes",
    "training_batches",
]

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


def build_optimization(
    network: nn.Module,
    make_optimizer: OptimizerFactory,
    trainer: L.Trainer,
    plan: LRPlan,
    freeze_backbone_epochs: int,
    backbone_lr: float | None,
    monitor: tuple[str, str],
    lr_scale: float = 1.0,
) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    """The optimizer over the network's parameter groups (their learning rates times ``lr_scale``), and Lightning's
    configuration of the scheduler that carries out ``plan`` (:func:`~project.training.schedules.scheduler_config`:
    the backbone frozen for its first epochs; ``monitor``, the model's metric, for ReduceLROnPlateau)."""
    optimizer = make_optimizer(parameter_groups(network, backbone_lr))
    for group in optimizer.param_groups:
        group["lr"] *= lr_scale
    return optimizer, scheduler_config(optimizer, trainer, plan, freeze_backbone_epochs, monitor)


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


def check_optimization(
    make_optimizer: OptimizerFactory, plan: LRPlan, freeze_backbone_epochs: int, backbone_lr: float | None
) -> None:
    """Refuse, before any work, an optimizer, fine-tuning settings or a learning-rate plan that cannot work (in that
    order: the plan's check builds the optimizer)."""
    check_optimizer(make_optimizer)
    check_finetuning(freeze_backbone_epochs, backbone_lr)
    check_plan(plan, make_optimizer, freeze_backbone_epochs)


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

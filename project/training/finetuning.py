"""Fine-tuning (:class:`FineTuning`): a pretrained backbone, a backbone frozen for the first epochs, and its own
learning rate; and the optimizer over the network's parameter groups (:func:`build_optimizer`).

The backbone is frozen with the learning rate, not with ``requires_grad``: the optimizer has its ``backbone`` and
``head`` parameter groups from the first step, and while the backbone is frozen the schedule holds its group's rate at
exactly 0 (:class:`project.training.schedules.PlannedSchedule`), so its weights do not move. (Lightning's
``BackboneFinetuning`` flips ``requires_grad``, which DDP does not see: Lightning issue #20340. Why, and the price:
docs/design_notes.md.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from project.data.text_sources import recorded_preprocessing
from project.data.tokenizer import TextTokenizer
from project.errors import UserInputError, first_line
from project.files.weights import read_weights, state_dict_differences
from project.training.schedules import PlannedSchedule, RunSteps
from project.training.torch_schedulers import OptimizerFactory, SchedulerFactory, probe_scheduler

_WRAPPER_PREFIXES = ("_orig_mod.", "module.", "network.", "model.")
"""Prefixes that wrappers add to parameter names: torch.compile, DDP, this project's LightningModule, others."""


@dataclass(frozen=True)
class FineTuning:
    """How a network starts from pretrained weights and how its backbone trains (``--model.finetuning.<name>``).

    Args:
        pretrained: a checkpoint, state dict or safetensors file whose backbone is loaded into the network before
            training starts (the head stays new). Not the same as ``--ckpt_path``, which resumes a run.
        freeze_backbone_epochs: keep the backbone's weights fixed for this many epochs, training only the head (a
            learning-rate schedule of the project's holds its rate at 0 meanwhile).
        backbone_lr: the backbone's learning rate once it trains (default: the optimizer's, as the head's).
    """

    pretrained: str | None = None
    freeze_backbone_epochs: int = 0
    backbone_lr: float | None = None

    def __post_init__(self) -> None:
        if self.freeze_backbone_epochs < 0:
            raise UserInputError(
                f"model.finetuning.freeze_backbone_epochs must be 0 or more, got {self.freeze_backbone_epochs}"
            )
        if self.backbone_lr is not None and not (math.isfinite(self.backbone_lr) and self.backbone_lr > 0):
            raise UserInputError(f"model.finetuning.backbone_lr must be positive and finite, got {self.backbone_lr}")


def _parameter_groups(network: nn.Module, backbone_lr: float | None) -> list[dict[str, Any]]:
    """``backbone`` and ``head`` parameter groups of the parameters that train (with LoRA, the backbone's are its
    adapters); the backbone's has its own learning rate when one is given."""

    def trained(module: nn.Module) -> list[nn.Parameter]:
        return [parameter for parameter in module.parameters() if parameter.requires_grad]

    backbone = {"name": "backbone", "params": trained(network.backbone)}
    return [
        {**backbone, "lr": backbone_lr} if backbone_lr else backbone,
        {"name": "head", "params": trained(network.head)},
    ]


def build_optimizer(
    network: nn.Module, make_optimizer: OptimizerFactory, backbone_lr: float | None, lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """The optimizer over the network's parameter groups, their learning rates times ``lr_scale``."""
    optimizer = make_optimizer(_parameter_groups(network, backbone_lr))
    for group in optimizer.param_groups:
        group["lr"] *= lr_scale
    return optimizer


def check_optimization(
    make_optimizer: OptimizerFactory, make_scheduler: SchedulerFactory, tuning: FineTuning, run: RunSteps | None = None
) -> None:
    """Refuse, before any work, an optimizer or schedule that cannot work, a frozen backbone a schedule cannot hold,
    and a schedule that does not fit ``run`` (its warm-up longer than the run): both are built once, on stand-in
    parameter groups (the backbone's and the head's), so that a value they refuse stops the run before it starts."""
    groups = [{"name": name, "params": [torch.zeros(1, requires_grad=True)]} for name in ("backbone", "head")]
    try:
        optimizer = make_optimizer(groups)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"model.optimizer: {first_line(error)}") from None
    lr = optimizer.defaults.get("lr")
    if isinstance(lr, float | int) and not (math.isfinite(lr) and lr > 0):
        raise UserInputError(f"model.optimizer.lr must be a positive finite number, got {lr}")
    scheduler = probe_scheduler(make_scheduler, optimizer)
    if tuning.freeze_backbone_epochs and not isinstance(scheduler, PlannedSchedule):
        raise UserInputError(
            f"model.finetuning.freeze_backbone_epochs needs one of the project's schedules, which hold the frozen "
            f"backbone's rate at 0, not {type(scheduler).__name__}: use --model.lr_scheduler Constant, OneCycle, "
            "Cosine, Linear or Steps"
        )
    if run is not None and isinstance(scheduler, PlannedSchedule):
        scheduler.plan(run)


def _strip_wrapper_prefixes(name: str) -> str:
    """``_orig_mod.network.backbone.0.weight`` -> ``backbone.0.weight``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def load_pretrained_backbone(network: nn.Module, path: str | Path) -> str:
    """Copy the backbone tensors of ``path`` into ``network.backbone``; return a one-paragraph summary.

    The backbone must match exactly (same names and shapes), otherwise nothing is loaded and the error lists the
    offending keys. The head is never loaded: the network keeps its freshly initialised head, sized for the new task.
    """
    weights = {_strip_wrapper_prefixes(name): tensor for name, tensor in read_weights(path).items()}
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
            f"model.finetuning.pretrained {path}: its backbone does not match this network's (a different "
            "architecture?).\n  " + "\n  ".join(problems)
        )
    network.backbone.load_state_dict(source)
    skipped = sorted(set(weights) - {f"backbone.{name}" for name in source})
    head = network.head
    return (
        f"Loaded {len(source)} backbone tensors from {path}; not loaded: {', '.join(skipped) or 'nothing'}. "
        f"The head is new: {head.in_features} -> {head.out_features}."
    )


def check_same_tokenizer(recorded: Any, tokenizer_json: str, source: str, fix: str) -> None:
    """Refuse text whose tokenizer (``tokenizer_json``, the data's) is not the one a checkpoint records (``recorded``:
    its ``preprocessing``, ``source`` its file): the same id would stand for another token, and what the network
    learned would not carry over. ``fix`` says what to give instead. A checkpoint that records no tokenizer (of weights
    alone) has nothing to compare."""
    stated = recorded.get("tokenizer") if isinstance(recorded, dict) else None
    if not isinstance(stated, str):
        return
    theirs, ours = (TextTokenizer.from_json(text).fingerprint for text in (stated, tokenizer_json))
    if theirs != ours:
        raise UserInputError(
            f"{source} was trained with another tokenizer (fingerprint {theirs}) than the data's ({ours}): its token "
            f"ids stand for other tokens; {fix}"
        )


def check_pretrained_tokenizer(path: str | Path, tokenizer_json: str) -> None:
    """Refuse a fine-tune on text whose data's tokenizer is not the one the pretrained checkpoint ``path`` was trained
    with (:func:`check_same_tokenizer`); a file of weights alone (a state dict, safetensors) records none."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors" or not path.is_file():
        return  # (a missing file is refused where the weights are read)
    try:
        recorded = recorded_preprocessing(path, "model.finetuning.pretrained")
    except UserInputError:  # not a checkpoint: refused, saying why, where the weights are read
        return
    fix = f"give its tokenizer: --data.tokenizer {path}"
    check_same_tokenizer(recorded, tokenizer_json, f"model.finetuning.pretrained {path}", fix)

"""Fine-tuning: load a pretrained backbone, and the learning-rate plan that freezes and then unfreezes it.

Freezing is done with the learning rate, not with ``requires_grad``: the optimizer has two parameter groups from the
first step (``backbone`` and ``head``), and while the backbone is frozen its group's learning rate is exactly 0, so
its weights do not move (AdamW and SGD then add exactly zero). Nothing about the optimizer changes at the milestone,
so a resumed run restores the same groups, and under DDP every process keeps the same set of trainable parameters
(Lightning's ``BackboneFinetuning`` flips ``requires_grad``, which DDP does not see: Lightning issue #20340). The
price is that the frozen backbone's gradients are still computed; for networks of this size that is cheap.

The learning rate of each group at optimizer step ``s`` is ``base_lr * LRFactor(s)``: the whole plan is a function
of the step count, which the scheduler's state in every checkpoint restores exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from project.errors import UserInputError, first_line

WRAPPER_PREFIXES = ("_orig_mod.", "module.", "network.", "model.")
"""Prefixes that wrappers add to parameter names: torch.compile, DDP, this project's LightningModule, others."""


@dataclass
class LRFactor:
    """The multiplier of a parameter group's learning rate at an optimizer step.

    ``schedule`` is ``none`` (1 throughout) or ``onecycle`` (a cosine warm-up from 1/25 to 1 over the first
    ``warmup_fraction`` of ``total_steps``, then a cosine decay to 1/250,000, as torch's OneCycleLR). The factor is 0
    for the first ``frozen_steps`` steps. Plain fields, so the scheduler's state dict stays plain values.
    """

    total_steps: int
    schedule: str = "none"
    warmup_fraction: float = 0.25
    frozen_steps: int = 0

    def __call__(self, step: int) -> float:
        if step < self.frozen_steps:
            return 0.0
        if self.schedule == "none":
            return 1.0
        start, end = 1 / 25, 1 / 250_000
        warmup = max(1, int(self.warmup_fraction * self.total_steps))
        if step < warmup:
            return start + (1 - start) * (1 - math.cos(math.pi * step / warmup)) / 2
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - 1 - warmup))
        return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2


def strip_wrapper_prefixes(name: str) -> str:
    """``_orig_mod.network.backbone.0.weight`` -> ``backbone.0.weight``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The tensors in a Lightning checkpoint, a plain state dict (``torch.save``) or a safetensors file.

    Checkpoints are read with ``weights_only=True``: a file that needs arbitrary unpickling is refused.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"model.pretrained {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise UserInputError(f"model.pretrained {path}: not a readable safetensors file ({error})") from None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for pickled objects, RuntimeError/EOFError for other files
        raise UserInputError(
            f"model.pretrained {path}: not a checkpoint or state dict that loads with torch.load(weights_only=True) "
            f"({first_line(error)})"
        ) from None
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not all(isinstance(value, Tensor) for value in content.values()):
        raise UserInputError(f"model.pretrained {path}: holds no state dict (a mapping of names to tensors)")
    return content


def load_pretrained_backbone(network: nn.Module, path: str | Path) -> str:
    """Copy the backbone tensors of ``path`` into ``network.backbone``; return a one-paragraph summary.

    The backbone must match exactly (same names and shapes), otherwise nothing is loaded and the error lists the
    offending keys. The head is never loaded: the network keeps its freshly initialised head, sized for the new task.
    """
    weights = {strip_wrapper_prefixes(name): tensor for name, tensor in read_weights(path).items()}
    source = {name.removeprefix("backbone."): t for name, t in weights.items() if name.startswith("backbone.")}
    target = network.backbone.state_dict()
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    mismatched = [
        f"{name}: checkpoint {tuple(source[name].shape)}, network {tuple(target[name].shape)}"
        for name in sorted(set(source) & set(target))
        if source[name].shape != target[name].shape
    ]
    if not source or missing or unexpected or mismatched:
        problems = []
        if not source:
            problems.append(f"no backbone.* tensors in {path} (its keys start: {', '.join(sorted(weights)[:6])})")
        if missing:
            problems.append(f"missing from the checkpoint: {', '.join('backbone.' + name for name in missing)}")
        if unexpected:
            problems.append(f"not in the network: {', '.join('backbone.' + name for name in unexpected)}")
        if mismatched:
            problems.append(f"different shapes: {'; '.join('backbone.' + item for item in mismatched)}")
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

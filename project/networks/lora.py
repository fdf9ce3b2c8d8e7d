"""LoRA: fine-tune a pretrained backbone through small low-rank adapters (Hugging Face ``peft``), its weights frozen.

``--model.lora.rank 8`` (or ``--config lora.yaml``) wraps the network's backbone in peft's ``LoraModel``: each
targeted ``nn.Linear`` and ``nn.Conv2d`` (not those inside torch's fused attention and transformer layers, which read
their weights themselves: :data:`_FUSED_LAYERS`) keeps its pretrained weight ``W`` frozen and gains a trainable update
``(alpha / rank) * B @ A`` of rank ``rank`` (``B`` starts at zero, so training starts from the pretrained network).
The head stays whole and trains, the backbone's other parameters are frozen.

A checkpoint holds only what changes: the adapters, the head and the backbone's buffers (BatchNorm statistics), plus
a fingerprint of the frozen base weights. Those are rebuilt from where they came from
(``--model.finetuning.pretrained`` and the network's ``weights``, both recorded in the checkpoint's hyperparameters)
and checked against the fingerprint before a run resumes or a checkpoint is loaded, so an adapter is never put on
another base. Export merges the adapters into the weights (:func:`merge_adapters`): the exported network is a plain one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from project.errors import UserInputError, install_command
from project.networks.base import Network

_ADAPTED_LAYERS = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class LoRA:
    """LoRA's settings.

    Args:
        rank: the rank of each update (the adapters' width).
        alpha: the update's scale is ``alpha / rank``; default ``2 * rank``.
        targets: names of the backbone's layers to adapt (a name matches a layer whose dotted path is the name or
            ends with ``.name``, peft's rule); default every ``nn.Linear`` and ungrouped ``nn.Conv2d``.
        dropout: dropout on the adapters' input.
    """

    rank: int = 8
    alpha: float | None = None
    targets: list[str] | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise UserInputError(f"model.lora.rank must be a positive integer, got {self.rank}")
        if self.alpha is not None and not self.alpha > 0:
            raise UserInputError(f"model.lora.alpha must be a positive number, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserInputError(f"model.lora.dropout must lie in [0, 1), got {self.dropout}")


_FUSED_LAYERS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
"""torch's layers that read the weights of their linear layers themselves: ``nn.MultiheadAttention`` never calls its
``out_proj`` (nor has a layer for ``in_proj_weight``), and the encoder and decoder layers' fast path in evaluation
reads every weight directly. An adapter inside them would be trained and then ignored (huggingface/peft#761: the
encoder layer in evaluation; speechbrain/speechbrain#2780: ``out_proj``)."""


def _adaptable_layers(backbone: nn.Module) -> list[str]:
    """The dotted paths of the layers LoRA can adapt: not grouped convolutions (depthwise ones), and nothing inside
    torch's fused layers (:data:`_FUSED_LAYERS`: torchvision's ViT attention keeps its weights; its MLP is adapted)."""
    fused = [path for path, layer in backbone.named_modules() if isinstance(layer, _FUSED_LAYERS)]
    return [
        path
        for path, layer in backbone.named_modules()
        if isinstance(layer, _ADAPTED_LAYERS)
        and getattr(layer, "groups", 1) == 1
        and not any(path.startswith(f"{outer}.") or not outer for outer in fused)
    ]


def _chosen_targets(backbone: nn.Module, targets: list[str] | None) -> list[str]:
    """The targeted layers' paths; a name that matches no adaptable layer is refused, naming some that exist."""
    adaptable = _adaptable_layers(backbone)
    if not adaptable:
        raise UserInputError(
            f"LoRA: {type(backbone).__name__} has no nn.Linear or nn.Conv2d layer to adapt (those inside torch's "
            f"nn.MultiheadAttention and nn.Transformer*Layer read their weights themselves, past any adapter)"
        )
    if targets is None:
        return adaptable
    unknown = [name for name in targets if not any(path == name or path.endswith(f".{name}") for path in adaptable)]
    if unknown or not targets:
        raise UserInputError(
            f"model.lora.targets: no adaptable layer (nn.Linear, nn.Conv2d) is named {unknown or targets}; the "
            f"backbone's include {', '.join(adaptable[:8])}{', ...' if len(adaptable) > 8 else ''}"
        )
    return [path for path in adaptable if any(path == name or path.endswith(f".{name}") for name in targets)]


def add_adapters(network: Network, settings: LoRA) -> None:
    """Wrap ``network.backbone`` in peft's ``LoraModel``: adapters on the targets, every other backbone weight
    frozen. The network's own weights (pretrained ones included) must be in place first."""
    try:
        import peft
    except ImportError:
        raise UserInputError(f"model.lora needs the peft library: {install_command('peft')}") from None
    config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha or 2 * settings.rank,
        target_modules=_chosen_targets(network.backbone, settings.targets),
        lora_dropout=settings.dropout,
    )
    network.backbone = peft.LoraModel(network.backbone, config, "default")


def has_adapters(network: Network) -> bool:
    """Whether :func:`add_adapters` wrapped the network's backbone (peft's ``LoraModel`` is what can merge)."""
    try:
        import peft
    except ImportError:
        return False  # no adapters without peft
    return isinstance(network.backbone, peft.LoraModel)


def merge_adapters(network: Network) -> None:
    """Fold the adapters into the weights they adapt: the backbone becomes the plain module it was, with the
    fine-tuned weights (for export). Nothing happens to a network without adapters."""
    if has_adapters(network):
        network.backbone = network.backbone.merge_and_unload()


def base_weights(model: nn.Module) -> dict[str, Tensor]:
    """The model's frozen parameters by state-dict name: the base weights a checkpoint leaves out."""
    return {name: parameter for name, parameter in model.named_parameters() if not parameter.requires_grad}


def fingerprint(base: dict[str, Tensor]) -> str:
    """A SHA-256 of the base weights' names and values: the identity of the base the adapters were trained on."""
    digest = hashlib.sha256()
    for name in sorted(base):
        digest.update(name.encode())
        digest.update(base[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def leave_out_base(checkpoint: dict[str, Any], model: nn.Module) -> None:
    """Remove the frozen base weights from a checkpoint being saved, and record their fingerprint instead."""
    base = base_weights(model)
    for name in base:
        checkpoint["state_dict"].pop(name, None)
    checkpoint["lora_base"] = {"fingerprint": fingerprint(base), "parameters": len(base)}


def restore_base(checkpoint: dict[str, Any], model: nn.Module, source: object) -> None:
    """Put the model's own frozen base weights back into a LoRA checkpoint being loaded (in place), after checking
    they are the base the checkpoint's adapters were trained on. Nothing happens to other checkpoints."""
    base = checkpoint.get("lora_base")
    if base is None:
        return
    stored = (checkpoint.get("hyper_parameters") or {}).get("lora")
    if not has_adapters(model.network):
        raise UserInputError(
            f"{source} holds LoRA adapters (model.lora {stored}) and this model has none: configure the run as the "
            f"one that wrote it (--config lora.yaml with its --model.lora options; its config.yaml)"
        )
    weights = base_weights(model)
    if base.get("fingerprint") != fingerprint(weights):
        raise UserInputError(
            f"{source} holds LoRA adapters trained on other base weights than this network's: rebuild the network "
            f"from the same model.finetuning.pretrained and weights file as the run that wrote it (its config.yaml)"
        )
    for name, tensor in weights.items():
        checkpoint["state_dict"].setdefault(name, tensor.detach())

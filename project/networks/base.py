"""The network contract: what the rest of the project reads of a network, declared with its defaults.

The LightningModule (:class:`project.training.TaskModule`) receives a network as its ``network`` argument, so a
network can be swapped, scaled or loaded on its own. Every network is a :class:`Network`: a ``backbone`` (features)
and a ``head`` (the last linear layer), so that fine-tuning can keep the first and replace the second, and the input
it takes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from project.errors import UserInputError


class Network(nn.Module):
    """The contract: everything the rest of the project reads of a network, declared here with its default.

    A subclass builds ``backbone`` and ``head`` in its constructor, sets ``num_outputs``, ``in_channels`` and
    ``image_size`` from its arguments and keeps those arguments in ``config``; the rest has defaults that fit a
    network built from scratch. Checkpoints may name only subclasses of this class (see
    :func:`project.training.checkpoints.allowed_class`), and those in modules the user trusts
    (:mod:`project.trusted`).
    """

    backbone: nn.Module
    """Images -> features: what fine-tuning loads (``--model.finetuning.pretrained``), freezes, and gives its own
    learning rate."""
    head: nn.Module
    """Features -> outputs, an ``nn.Linear``: replaced when a network is fine-tuned for new outputs."""
    num_outputs: int = 1
    """Size of the output layer; the constructor takes it too (the data decides it: ``--model.network`` is linked)."""
    in_channels: int = 1
    """Channels of the images the network takes, checked against the data before training."""
    image_size: int = 28
    """Side length of the (square) images the network takes, checked against the data before training."""
    vocab_size: int = 0
    """How many token ids the network embeds: a text network takes batches of ids (batch, length), padded with id 0,
    which it masks; 0: the network takes images."""
    max_length: int = 0
    """The most token ids of one sequence a text network takes (its position embeddings); 0: any, or images."""
    config: dict[str, Any]
    """The constructor's arguments as plain values (numbers, strings, lists): a checkpoint rebuilds the network from
    them with ``type(network)(**config)``."""
    normalisation: dict[str, Any] | None = None
    """The mean and std per channel (``{"mean": [...], "std": [...]}``) the network's pretrained weights expect, or
    ``None`` when it states none: data whose ``mean`` / ``std`` are null take it."""
    checkpoint_overrides: ClassVar[dict[str, Any]] = {}
    """``config`` entries replaced in a checkpoint: a checkpoint holds the weights, so a network that downloads or
    reads weights when built is rebuilt with ``{"weights": None}``."""

    def forward(self, images: Tensor) -> Tensor:
        """Raw outputs for a batch of images (logits, or values for regression): the task applies softmax or sigmoid."""
        return self.head(self.backbone(images))

    def example_input(self) -> Tensor:
        """One input as the network takes it, of zeros (what the model summary and TensorBoard's graph run): an
        image of ``in_channels`` x ``image_size`` x ``image_size``; a text network gives a short sequence of ids."""
        return torch.zeros(1, self.in_channels, self.image_size, self.image_size)


def check_input(
    network: Network, data_vocab_size: int, data_max_length: int, data_shape: tuple[int, int, int] | None
) -> None:
    """Refuse data the network cannot take, naming both sides and the options that set them: text (the data's
    tokenizer makes ``data_vocab_size`` ids, ``data_max_length`` of them at most in an example) for a network that
    embeds fewer ids or positions, or takes images; images (``data_shape``: channels, height, width; ``None``: not
    known before setup) of another shape."""
    if data_vocab_size or network.vocab_size:
        if not data_vocab_size:
            raise UserInputError(
                f"{type(network).__name__} takes token ids, and the data gives images: choose a text data module"
            )
        if not network.vocab_size:
            raise UserInputError(
                f"the data gives token ids, and {type(network).__name__} takes images: choose a text network"
            )
        if data_vocab_size > network.vocab_size:
            raise UserInputError(
                f"the data's tokenizer makes {data_vocab_size} token ids and the network embeds {network.vocab_size}: "
                f"set model.network.init_args.vocab_size to {data_vocab_size} or more (or data.vocab_size lower)"
            )
        if network.max_length and data_max_length > network.max_length:
            raise UserInputError(
                f"data.max_length is {data_max_length} and the network takes {network.max_length} tokens at most: set "
                f"data.max_length to {network.max_length} or less (or the network's max_length higher)"
            )
        return
    if data_shape is None:
        return
    channels, size, _ = data_shape
    if (channels, size) != (network.in_channels, network.image_size):
        raise UserInputError(
            f"the data gives {channels}x{size}x{size} images but the network takes "
            f"{network.in_channels}x{network.image_size}x{network.image_size}: set data.channels / data.image_size, "
            f"or model.network.init_args.in_channels / image_size (a pretrained backbone fixes the network's)"
        )

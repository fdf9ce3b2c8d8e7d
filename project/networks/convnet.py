"""The classic MNIST CNN (:class:`ConvNet`), with its width and depth as arguments."""

from __future__ import annotations

from typing import Any

from torch import nn

from project.errors import UserInputError
from project.networks.base import Network


def _conv_output_size(size: int, kernel_size: int, padding: int, pool: int) -> int:
    """Side length after two ``kernel_size`` convolutions and a ``pool``x``pool`` max-pool (one conv block)."""
    after_convs = size - 2 * (kernel_size - 1) + 4 * padding
    return after_convs // pool


def _check_convnet_config(config: dict[str, Any]) -> None:
    """Refuse ConvNet arguments that cannot build a network, naming the value and what is allowed."""
    for name in ("num_outputs", "in_channels", "image_size", "width", "depth", "hidden_size"):
        if config[name] < 1:
            raise UserInputError(f"ConvNet: {name} must be a positive integer, got {config[name]}")
    for name in ("conv_dropout", "fc_dropout"):
        if not 0.0 <= config[name] < 1.0:
            raise UserInputError(f"ConvNet: {name} must lie in [0, 1), got {config[name]}")
    if config["padding"] not in (0, 1):
        raise UserInputError(f"ConvNet: padding must be 0 or 1 (3x3 kernels), got {config['padding']}")


def _conv_blocks(
    in_channels: int, image_size: int, width: int, depth: int, padding: int, dropout: float
) -> tuple[list[nn.Module], int, int]:
    """The layers of ``depth`` conv blocks, and the channels and side length of their output."""
    layers: list[nn.Module] = []
    channels, side = in_channels, image_size
    for block in range(depth):
        next_side = _conv_output_size(side, kernel_size=3, padding=padding, pool=2)
        if next_side < 1:
            raise UserInputError(
                f"ConvNet: a {image_size}x{image_size} image shrinks to nothing in conv block {block + 1} of "
                f"{depth} (padding={padding}); use a smaller depth, padding=1 or larger images"
            )
        mid, out = width * 2**block, width * 2 ** (block + 1)
        layers += [
            nn.Conv2d(channels, mid, kernel_size=3, padding=padding),
            nn.ReLU(),
            nn.Conv2d(mid, out, kernel_size=3, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
        ]
        channels, side = out, next_side
    return layers, channels, side


class ConvNet(Network):
    """The classic MNIST CNN, with its width and depth as arguments.

    With the defaults this is the network of pytorch/examples' ``mnist/main.py``: conv 1->32 3x3, conv 32->64 3x3,
    2x2 max-pool, dropout 0.25, fc 9216->128, dropout 0.5, fc 128->``num_outputs`` (1.2 M parameters). It returns
    logits: the loss functions apply their own softmax or sigmoid.

    Each conv block is two 3x3 convolutions, a 2x2 max-pool and dropout. Block ``b`` has ``width * 2**b`` channels
    after its first convolution and twice that after its second, so ``depth`` adds blocks and ``width`` widens them.
    ``padding=1`` keeps the side length through the convolutions, which deeper networks on 28x28 images need.
    """

    def __init__(
        self,
        num_outputs: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        width: int = 32,
        depth: int = 1,
        hidden_size: int = 128,
        conv_dropout: float = 0.25,
        fc_dropout: float = 0.5,
        padding: int = 0,
    ) -> None:
        super().__init__()
        # The constructor's arguments as plain values: enough to rebuild this network from a checkpoint.
        self.config = {
            "num_outputs": num_outputs,
            "in_channels": in_channels,
            "image_size": image_size,
            "width": width,
            "depth": depth,
            "hidden_size": hidden_size,
            "conv_dropout": conv_dropout,
            "fc_dropout": fc_dropout,
            "padding": padding,
        }
        _check_convnet_config(self.config)
        self.num_outputs, self.in_channels, self.image_size = num_outputs, in_channels, image_size
        blocks, channels, side = _conv_blocks(in_channels, image_size, width, depth, padding, conv_dropout)
        fully_connected = [
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden_size),
            nn.ReLU(),
            nn.Dropout(fc_dropout),
        ]
        self.backbone = nn.Sequential(*blocks, *fully_connected)
        self.head = nn.Linear(hidden_size, num_outputs)

    @property
    def feature_size(self) -> int:
        """Width of the backbone's output, which is the head's input."""
        return self.head.in_features

"""How the network runs (``--model.speed.<name>``): faster convolutions and a compiled network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Speed:
    """How the network runs; neither changes what it computes.

    Args:
        channels_last: hold weights and images in channels-last memory layout (faster convolutions on GPUs).
        compile: compile the network with ``torch.compile`` (the first steps take longer).
    """

    channels_last: bool = False
    compile: bool = False

    def apply(self, network: nn.Module) -> None:
        """Put the network in the layout asked for, and compile its call (its module and parameter names stay)."""
        if self.channels_last:
            network.to(memory_format=torch.channels_last)
        if self.compile:
            network.compile()

    def images(self, images: Tensor) -> Tensor:
        """A batch of images in the layout the network is in."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

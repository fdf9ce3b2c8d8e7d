"""Any ``nn.Module`` whose last layer is linear, made a :class:`~project.networks.base.Network`."""

from __future__ import annotations

from torch import nn

from project.errors import UserInputError
from project.networks.base import Network


class AdaptedNetwork(Network):
    """Any ``nn.Module`` whose last layer is an ``nn.Linear``, made to keep the :class:`Network` contract.

    The layer named ``final_layer`` (a dotted path: ``fc`` for a torchvision ResNet, ``classifier.3`` for a
    MobileNetV3) becomes the head, replaced by a new ``nn.Linear`` with ``num_outputs`` outputs; the module itself,
    with an identity in that layer's place, is the backbone. ``module`` is built in Python (or by the command line);
    a checkpoint of it is reloaded by passing ``network=`` to ``TaskModule.load_from_checkpoint``.
    """

    def __init__(
        self, module: nn.Module, final_layer: str, num_outputs: int, in_channels: int, image_size: int
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise UserInputError(
                f"AdaptedNetwork: module must be an nn.Module built in Python, got {type(module).__name__}"
            )
        try:
            final = module.get_submodule(final_layer)
        except AttributeError:
            raise UserInputError(f"AdaptedNetwork: {type(module).__name__} has no layer {final_layer!r}") from None
        if not isinstance(final, nn.Linear):
            raise UserInputError(f"AdaptedNetwork: {final_layer} is a {type(final).__name__}, not the nn.Linear head")
        parent, _, name = final_layer.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, name, nn.Identity())
        self.backbone = module
        self.head = nn.Linear(final.in_features, num_outputs)
        self.num_outputs, self.in_channels, self.image_size = num_outputs, in_channels, image_size
        cls = type(module)
        self.config = {
            "module": f"{cls.__module__}.{cls.__qualname__}",
            "final_layer": final_layer,
            "num_outputs": num_outputs,
            "in_channels": in_channels,
            "image_size": image_size,
        }

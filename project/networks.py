"""Networks: plain ``nn.Module`` classes with no training logic, and the contract they keep.

The LightningModule in :mod:`project.task_module` receives one of these as its ``network`` argument, so a network
can be swapped, scaled or loaded on its own. Every network is a :class:`Network`: a ``backbone`` (features) and a
``head`` (the last linear layer), so that fine-tuning can keep the first and replace the second, and the input it
takes. :class:`AdaptedNetwork` makes any ``nn.Module`` whose last layer is linear keep the contract.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from project.errors import UserInputError


def conv_output_size(size: int, kernel_size: int, padding: int, pool: int) -> int:
    """Side length after two ``kernel_size`` convolutions and a ``pool``x``pool`` max-pool (one conv block)."""
    after_convs = size - 2 * (kernel_size - 1) + 4 * padding
    return after_convs // pool


class Network(nn.Module):
    """The contract: what the project needs of a network.

    - ``backbone`` (images -> features) and ``head`` (features -> outputs, an ``nn.Linear``): ``--model.pretrained``
      loads the backbone only, fine-tuning freezes it and gives it its own learning rate;
    - ``num_outputs`` (the constructor takes it too: the data sets it), and the input it takes: ``in_channels`` and a
      square ``image_size``, checked against the data before training;
    - ``config``: the constructor's arguments as plain values, so that a checkpoint can rebuild it;
    - ``forward(images)`` returns raw outputs (logits, or values for regression): the task applies softmax or sigmoid.

    Checkpoints may name only subclasses of this class (see :func:`project.checkpoints.allowed_class`).
    """

    backbone: nn.Module
    head: nn.Module
    num_outputs: int
    in_channels: int
    image_size: int
    config: dict[str, Any]


def check_convnet_config(config: dict[str, Any]) -> None:
    """Refuse ConvNet arguments that cannot build a network, naming the value and what is allowed."""
    for name in ("num_outputs", "in_channels", "image_size", "width", "depth", "hidden_size"):
        if config[name] < 1:
            raise UserInputError(f"ConvNet: {name} must be a positive integer, got {config[name]}")
    for name in ("conv_dropout", "fc_dropout"):
        if not 0.0 <= config[name] < 1.0:
            raise UserInputError(f"ConvNet: {name} must lie in [0, 1), got {config[name]}")
    if config["padding"] not in (0, 1):
        raise UserInputError(f"ConvNet: padding must be 0 or 1 (3x3 kernels), got {config['padding']}")


def conv_blocks(
    in_channels: int, image_size: int, width: int, depth: int, padding: int, dropout: float
) -> tuple[list[nn.Module], int, int]:
    """The layers of ``depth`` conv blocks, and the channels and side length of their output."""
    layers: list[nn.Module] = []
    channels, side = in_channels, image_size
    for block in range(depth):
        next_side = conv_output_size(side, kernel_size=3, padding=padding, pool=2)
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
        check_convnet_config(self.config)
        self.num_outputs, self.in_channels, self.image_size = num_outputs, in_channels, image_size
        blocks, channels, side = conv_blocks(in_channels, image_size, width, depth, padding, conv_dropout)
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

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


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

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


def check_image_shape(network: nn.Module, datamodule: object) -> None:
    """Refuse data whose images the network cannot take, naming both shapes and the options that set them."""
    data_shape = getattr(datamodule, "image_shape", None)
    network_shape = (getattr(network, "in_channels", None), getattr(network, "image_size", None))
    if data_shape is None or None in network_shape:
        return
    channels, size, _ = data_shape
    if (channels, size) != network_shape:
        raise UserInputError(
            f"the data gives {channels}x{size}x{size} images but the network takes "
            f"{network_shape[0]}x{network_shape[1]}x{network_shape[1]}: set data.channels / data.image_size, or "
            f"model.network.init_args.in_channels / image_size (a pretrained backbone fixes the network's)"
        )

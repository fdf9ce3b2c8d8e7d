"""A small ResNet of your own, outside ``project/``: a :class:`project.networks.Network` in one short file."""

from torch import nn

from project.networks import Network


class Block(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x):
        return nn.functional.relu(x + self.layers(x))


class SmallResNet(Network):
    """A stem, ``blocks`` residual blocks of ``width`` channels, global average pooling, a linear head."""

    def __init__(
        self, num_outputs: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 32, blocks: int = 2
    ) -> None:
        super().__init__()
        self.config = dict(num_outputs=num_outputs, in_channels=in_channels, image_size=image_size, width=width,
                           blocks=blocks)  # fmt: skip
        self.num_outputs, self.in_channels, self.image_size = num_outputs, in_channels, image_size
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            *[Block(width) for _ in range(blocks)],
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(width, num_outputs)

"""Examples read a whole batch at a time: what a DataLoader gets from a dataset's ``__getitems__`` (torch's protocol
for reading many examples at once), and the collation that takes the batch as it was read.

:class:`ExampleBatch` is a list of ``(image, target)`` examples, as torch's default collation expects, that also
holds them already stacked (one tensor for the batch, made once); :func:`read_whole` hands those on, any other list
goes through the default collation.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import default_collate


class ExampleBatch(list):
    """``(image, target)`` examples (views of :attr:`images`), with :attr:`images` and :attr:`targets` stacked as
    torch's default collation would stack them."""

    def __init__(self, examples: list[tuple[Tensor, Any]], images: Tensor, targets: Tensor) -> None:
        super().__init__(examples)
        self.images, self.targets = images, targets


def read_whole(examples: list[Any]) -> Any:
    """A DataLoader's batch: the stacked tensors of an :class:`ExampleBatch`, else the default collation's."""
    if isinstance(examples, ExampleBatch):
        return examples.images, examples.targets
    return default_collate(examples)

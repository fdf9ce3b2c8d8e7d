"""Augmentation of whole training batches, on the device they are on, from a generator of the data module's own (so
that its state is in the checkpoint and a resumed run draws the same shifts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image by a whole number of pixels in [-max_shift, max_shift] along each axis (edges repeated)."""
    count, _, height, width = images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (count, 2), generator=generator).to(images)
    theta = torch.zeros(count, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * shifts[:, 0] / width
    theta[:, 1, 2] = -2 * shifts[:, 1] / height
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="border", align_corners=False)

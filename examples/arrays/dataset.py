"""The example's arrays as a ``torch.utils.data.Dataset`` of one's own, trained through
``project.data.DatasetDataModule`` with no other code (``dataset_config.yaml``): the route for a dataset you already
have, which makes its own tensors.

    python examples/arrays/make_arrays.py
    python -m project fit --config examples/arrays/dataset_config.yaml --trust examples.arrays.dataset
    python -m project evaluate logs/dataset/version_0/checkpoints/last.ckpt --trust examples.arrays.dataset
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

MEAN, STD = 0.5, 0.5
"""What :class:`ArrayImages` normalises its pixels (0..1) with; the config states them as ``data.mean`` and
``data.std``, so that new images to predict go through the same."""


class ArrayImages(Dataset):
    """``images.npy`` ((N, H, W) uint8) and ``labels.npy`` ((N,) integers) in ``folder``: each example is the image
    as a (1, H, W) float tensor, ``(pixels / 255 - MEAN) / STD``, and its label."""

    def __init__(self, folder: str = "data/arrays") -> None:
        self.images = torch.from_numpy(np.load(Path(folder) / "images.npy", allow_pickle=False))
        self.labels = np.load(Path(folder) / "labels.npy", allow_pickle=False).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        pixels = self.images[index].unsqueeze(0).float() / 255
        return (pixels - MEAN) / STD, int(self.labels[index])

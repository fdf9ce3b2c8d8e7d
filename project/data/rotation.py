"""A regression task on real images: predict the angle by which an MNIST-family image was rotated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from project.data.in_memory import SplitTensors, TensorImages
from project.data.torchvision_family import MNISTDataModule, apply, raw_pixels
from project.errors import UserInputError


class _RotatedImages(TensorImages):
    """Each image rotated by an angle drawn once per index from a seeded uniform distribution; target = angle / max.

    ``dataset`` yields PIL images; each is rotated (counter-clockwise, black corners), then passed to ``transform``
    (to uint8 pixels).
    The angles depend only on ``seed``, so every epoch and every run sees the same ones.
    """

    def __init__(
        self, dataset: Dataset, max_angle: float, seed: int, transform: Callable, image_steps: list[Callable]
    ) -> None:
        self.dataset = dataset
        self.max_angle = max_angle
        self.transform = transform
        self.image_steps = image_steps
        generator = torch.Generator().manual_seed(seed)
        self.angles = ((torch.rand(len(dataset), generator=generator) * 2 - 1) * max_angle).tolist()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, float]:
        image, _ = self.dataset[index]
        return self.transform(self.rotated(image, index)), self.angles[index] / self.max_angle

    def rotated(self, image: Image.Image, index: int) -> Image.Image:
        return image.rotate(self.angles[index], resample=Image.Resampling.BILINEAR)

    def tensors(self) -> SplitTensors:
        """Every image rotated once, as uint8 (the in-memory path), and the targets."""
        images = (Image.fromarray(pixels.numpy()) for pixels in raw_pixels(self.dataset))
        rotated = [TF.pil_to_tensor(apply(self.image_steps, self.rotated(image, i))) for i, image in enumerate(images)]
        return SplitTensors(torch.stack(rotated), torch.tensor(self.angles) / self.max_angle)


class RotationDataModule(MNISTDataModule):
    """Regression on real images: predict the angle by which an image of ``dataset`` was rotated.

    Each image is rotated by an angle in ``[-max_angle, max_angle]`` degrees; the target is the angle divided by
    ``max_angle`` (so it lies in [-1, 1]). The network learns what an upright digit (or shirt) looks like.
    """

    default_task = "regression"

    def __init__(self, max_angle: float = 45.0, angle_seed: int = 0, **kwargs: Any) -> None:
        if not 0 < max_angle <= 180:
            raise UserInputError(f"data.max_angle must lie in (0, 180] degrees, got {max_angle}")
        super().__init__(**kwargs)
        if self.split.samples_per_class:
            raise UserInputError("RotationDataModule is a regression task: data.split.samples_per_class does not apply")
        self.max_angle = max_angle
        self.angle_seed = angle_seed

    @property
    def dataset_name(self) -> str:
        return f"{super().dataset_name}, rotated"

    def load_split(self, train: bool) -> Dataset:
        dataset = super().load_split(train)
        transform, dataset.transform = dataset.transform, None  # rotate the PIL image first, then convert it
        seed = self.angle_seed + (0 if train else 1)
        return _RotatedImages(dataset, self.max_angle, seed, transform, self.image_steps())

    def leaf_tensors(self, dataset: _RotatedImages) -> SplitTensors:
        return dataset.tensors()

    def split_labels(self, dataset: Dataset) -> None:
        return None

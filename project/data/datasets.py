"""Any ``torch.utils.data.Dataset`` a user already has, as a data module (:class:`DatasetDataModule`)."""

from __future__ import annotations

import operator
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from project.data.base import ImageDataModule
from project.data.decoding import check_square, per_channel_normalisation
from project.data.labels import check_class_count
from project.data.splits import subset_labels
from project.errors import UserInputError


def _first_image(dataset: Dataset, option: str) -> Tensor:
    """The first example's image, refused unless the dataset has examples and the example is ``(image tensor,
    label)``, the image ``(C, H, W)`` floats with C = 1 or 3, square."""
    try:
        count = len(dataset)
    except TypeError:
        raise UserInputError(f"data.{option} has no len(): give a map-style Dataset (with __len__)") from None
    if count < 1:
        raise UserInputError(f"data.{option} is empty")
    example = dataset[0]
    image = example[0] if isinstance(example, tuple | list) and len(example) == 2 else None
    floats = isinstance(image, Tensor) and image.is_floating_point()
    if not floats or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise UserInputError(
            f"data.{option}[0] is {type(example).__name__}: each example must be (image, label), the image a float "
            f"tensor of shape (C, H, W) with C = 1 or 3, normalised as the network should see it"
        )
    check_square(image.shape[1], image.shape[2], f"data.{option}")
    return image


_PIXEL_SLACK = 0.01
"""How far outside 0..1 a pixel of the first image may come out, its stated normalisation undone (rounding, a resize's
overshoot), before :func:`_check_stated_normalisation` refuses it."""


def _check_stated_normalisation(image: Tensor, mean: tuple[float, ...], std: tuple[float, ...], option: str) -> None:
    """Refuse ``mean`` and ``std`` when the dataset's first image, normalised with them as stated, does not come back
    to pixels on the 0..1 scale: new image files would be prepared otherwise than the training images
    (``python -m project predict``, exports)."""
    shape = (-1, 1, 1)
    pixels = image.detach().float().cpu() * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    low, high = pixels.min().item(), pixels.max().item()
    if low < -_PIXEL_SLACK or high > 1 + _PIXEL_SLACK:
        raise UserInputError(
            f"data.{option}[0]'s image is not pixels on the 0..1 scale normalised with data.mean {list(mean)} and "
            f"data.std {list(std)}: undone, they run from {low:.3g} to {high:.3g}; give the (x - mean) / std the "
            f"dataset applies to 0..1 pixels, which new images to predict go through"
        )


class DatasetDataModule(ImageDataModule):
    """A ``torch.utils.data.Dataset`` of one's own, yielding ``(image tensor, int label)``::

        data = DatasetDataModule(MyDataset("train"), MyDataset("test"), num_classes=10, mean=0.5, std=0.5)
        data = DatasetDataModule(MyDataset("train"), num_classes=2, mean=0.5, std=0.5, labels=Labels(["cat", "dog"]))

    The images come as the dataset makes them (its own transforms, normalisation included) through a DataLoader
    (``num_workers`` applies); the validation split, few-shot subsets, label rules and exact resume are those of
    every data module (:class:`~project.data.ImageDataModule`). Without ``test_dataset``, ``test_size`` examples of
    ``train_dataset`` are held out for testing (seeded with ``split_seed + 1``). Each example's label is read once,
    at setup (for the splits and the checks), which reads its image too. A dataset that is a
    :class:`~project.data.in_memory.TensorImages` (uint8 or unscaled float pixels, normalised with ``mean`` and
    ``std``) takes the in-memory path instead.

    In a config, the datasets are given by class path (a class of a module of one's own, trusted with ``--trust``):
    they are recorded as their class paths and arguments, and ``python -m project evaluate`` rebuilds them from the
    checkpoint (with the same ``--trust``). Built in Python, they are objects a checkpoint cannot hold.

    Args:
        train_dataset: the training examples.
        test_dataset: the test examples; default: held out of ``train_dataset``.
        num_classes: the number of classes; labels are 0 .. num_classes - 1.
        mean, std: required: the normalisation the dataset's images went through from pixels on the 0..1 scale,
            ``(x - mean) / std`` (one number or one per channel; 0 and 1: none), which new image files go through to
            be predicted (``python -m project predict``, exports). Checked on the first image: undone, it must give
            pixels in 0..1. (The images' own statistics cannot say it: a normalised image's mean is 0 whatever it was.)
        **kwargs: see :class:`~project.data.ImageDataModule` (batch_size, split, labels (class names among them),
            augment, loading).
    """

    unrecorded_arguments = ("train_dataset", "test_dataset")
    class_arguments: ClassVar[dict[str, type]] = {"train_dataset": Dataset, "test_dataset": Dataset}

    def __init__(
        self,
        train_dataset: Dataset,
        test_dataset: Dataset | None = None,
        *,
        num_classes: int,
        mean: float | list[float] | None = None,
        std: float | list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_class_count(num_classes)
        self.labels.check_classes(num_classes)
        if mean is None or std is None:
            raise UserInputError(
                f"{type(self).__name__} needs data.mean and data.std: the normalisation (x - mean) / std the dataset's "
                "images went through from pixels on the 0..1 scale (mean 0 and std 1 if none), which new images go "
                "through to be predicted"
            )
        image = _first_image(train_dataset, "train_dataset")
        self.image_shape = tuple(image.shape)
        if test_dataset is not None and tuple(_first_image(test_dataset, "test_dataset").shape) != self.image_shape:
            raise UserInputError(f"data.test_dataset's images are not {self.image_shape} (C, H, W), as training ones")
        stated = per_channel_normalisation(mean, std, self.image_shape[0])
        _check_stated_normalisation(image, *stated, "train_dataset")
        self.mean, self.std = (list(values) for values in stated)
        self.train_dataset, self.test_dataset = train_dataset, test_dataset
        self.num_classes = num_classes
        self.class_labels: dict[int, Tensor] = {}

    def prepare_data(self) -> None:
        """Nothing to fetch: the datasets are given."""

    def load_split(self, train: bool) -> Dataset:
        if self.test_dataset is not None:
            return self.train_dataset if train else self.test_dataset
        kept, held = self.split.test_split(len(self.train_dataset))
        return Subset(self.train_dataset, (kept if train else held).tolist())

    def split_labels(self, dataset: Dataset) -> Tensor:
        base = dataset
        while isinstance(base, Subset):
            base = base.dataset
        if id(base) not in self.class_labels:
            option = "train_dataset" if base is self.train_dataset else "test_dataset"
            self.class_labels[id(base)] = torch.tensor([_label_of(base[i], option, i) for i in range(len(base))])
        return subset_labels(dataset, self.class_labels[id(base)])

    def normalisation(self) -> tuple[list[float], list[float]]:
        return list(self.mean), list(self.std)

    @property
    def arrives_normalised(self) -> bool:
        """Through a DataLoader, the images come normalised by the datasets themselves; held in memory, as pixels."""
        return not self.memory

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        held = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
        if self.memory and self.memory.keys() != {name for name, split in held.items() if split is not None}:
            raise UserInputError(
                "data.train_dataset and data.test_dataset must both be TensorImages (held in memory) or neither: "
                f"the {', '.join(sorted(self.memory))} split(s) can be held, the others not"
            )


def _label_of(example: Any, option: str, index: int) -> int:
    """The class label of ``example`` (``(image, label)``) as an int, refused unless it is an integer."""
    label = example[1]
    try:
        return operator.index(label)
    except TypeError:
        raise UserInputError(
            f"data.{option}[{index}] has the label {label!r} ({type(label).__name__}): labels must be integers "
            f"(class indices 0, 1, ...)"
        ) from None

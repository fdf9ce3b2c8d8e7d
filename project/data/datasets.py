"""Any ``torch.utils.data.Dataset`` a user already has, as a data module (:class:`DatasetDataModule`)."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from project.data.base import ImageDataModule
from project.data.decoding import per_channel_normalisation
from project.data.splits import seeded_split, subset_labels
from project.errors import UserInputError


def first_image_shape(dataset: Dataset, option: str) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of the first example's image, refused unless the example is ``(image tensor, label)``."""
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
    if image.shape[1] != image.shape[2]:
        raise UserInputError(f"data.{option}: images of {image.shape[1]}x{image.shape[2]} pixels; they must be square")
    return tuple(image.shape)


class DatasetDataModule(ImageDataModule):
    """A ``torch.utils.data.Dataset`` of one's own, yielding ``(image tensor, int label)``, built in Python::

        data = DatasetDataModule(MyDataset("train"), MyDataset("test"), num_classes=10, samples_per_class=20)

    The images come as the dataset makes them (its own transforms, normalisation included) through a DataLoader
    (``num_workers`` applies); the validation split, few-shot subsets, label rules and exact resume are those of
    every data module (:class:`~project.data.ImageDataModule`). Without ``test_dataset``, ``test_size`` examples of
    ``train_dataset`` are held out for testing (seeded with ``split_seed + 1``). Each example's label is read once,
    at setup (for the splits and the checks), which reads its image too. A dataset that is a
    :class:`~project.data.in_memory.TensorImages` (uint8 or unscaled float pixels, normalised with ``mean`` and
    ``std``) takes the in-memory path instead.

    Args:
        train_dataset: the training examples.
        test_dataset: the test examples; default: held out of ``train_dataset``.
        num_classes: the number of classes; labels are 0 .. num_classes - 1.
        mean, std: the normalisation the dataset's images went through (one number or one per channel), recorded
            for predictions of new image files (``scripts/predict.py``); default none (0 and 1).
        class_names: a name per class (reports, predictions); default ``0``, ``1``, ...
        test_size: without ``test_dataset``, the examples held out for testing: a count or a fraction below 1.
        **kwargs: see :class:`~project.data.ImageDataModule` (batch sizes, workers, val_size, few-shot, ...).
    """

    unrecorded_arguments = ("train_dataset", "test_dataset")

    def __init__(
        self,
        train_dataset: Dataset,
        test_dataset: Dataset | None = None,
        *,
        num_classes: int,
        mean: float | list[float] = 0.0,
        std: float | list[float] = 1.0,
        class_names: list[str] | None = None,
        test_size: int | float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise UserInputError(f"data.num_classes must be 2 or more, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise UserInputError(f"data.class_names names {len(class_names)} classes, and num_classes is {num_classes}")
        self.image_shape = first_image_shape(train_dataset, "train_dataset")
        if test_dataset is not None and first_image_shape(test_dataset, "test_dataset") != self.image_shape:
            raise UserInputError(f"data.test_dataset's images are not {self.image_shape} (C, H, W), as training ones")
        channels = self.image_shape[0]
        self.mean, self.std = (list(values) for values in per_channel_normalisation(mean, std, channels))
        self.train_dataset, self.test_dataset = train_dataset, test_dataset
        self.num_classes = num_classes
        self.named_classes = None if class_names is None else [str(name) for name in class_names]
        self.test_size = test_size
        self.labels: dict[int, Tensor] = {}

    def prepare_data(self) -> None:
        """Nothing to fetch: the datasets are given."""

    def load_split(self, train: bool) -> Dataset:
        if self.test_dataset is not None:
            return self.train_dataset if train else self.test_dataset
        kept, held = seeded_split(len(self.train_dataset), self.test_size, self.split_seed + 1, "test_size")
        return Subset(self.train_dataset, (kept if train else held).tolist())

    def split_labels(self, dataset: Dataset) -> Tensor:
        base = dataset
        while isinstance(base, Subset):
            base = base.dataset
        if id(base) not in self.labels:
            option = "train_dataset" if base is self.train_dataset else "test_dataset"
            self.labels[id(base)] = torch.tensor([label_of(base[i], option, i) for i in range(len(base))])
        return subset_labels(dataset, self.labels[id(base)])

    def normalisation(self) -> tuple[list[float], list[float]]:
        return list(self.mean), list(self.std)


def label_of(example: Any, option: str, index: int) -> int:
    """The class label of ``example`` (``(image, label)``) as an int, refused unless it is an integer."""
    label = example[1]
    try:
        return operator.index(label)
    except TypeError:
        raise UserInputError(
            f"data.{option}[{index}] has the label {label!r} ({type(label).__name__}): labels must be integers "
            f"(class indices 0, 1, ...)"
        ) from None

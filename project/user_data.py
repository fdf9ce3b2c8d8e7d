"""A user's own data: a folder of images sorted by class, or a CSV of image paths and numeric targets.

Images are converted to what the network takes, as the config says: ``channels`` (1 = greyscale, 3 = RGB) and a
square ``image_size`` (resized, aspect ratio not kept), then normalised with ``mean`` and ``std`` on every channel.
The defaults (1 channel, 28x28, MNIST's mean and std) match a backbone pretrained on MNIST.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

from project.data import ImageDataModule, Task
from project.errors import DataNotFoundError, UserInputError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def image_transform(channels: int, image_size: int, mean: float, std: float) -> transforms.Compose:
    """PIL image -> normalised ``channels`` x ``image_size`` x ``image_size`` tensor."""
    if channels not in (1, 3):
        raise UserInputError(f"data.channels must be 1 (greyscale) or 3 (RGB), got {channels}")
    if image_size < 1:
        raise UserInputError(f"data.image_size must be a positive integer, got {image_size}")
    if std <= 0:
        raise UserInputError(f"data.std must be positive, got {std}")
    to_channels = transforms.Grayscale(1) if channels == 1 else transforms.Lambda(_to_rgb)
    return transforms.Compose(
        [
            to_channels,
            transforms.Resize((image_size, image_size), antialias=True),
            transforms.ToTensor(),
            transforms.Normalize((mean,) * channels, (std,) * channels),
        ]
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def carve(count: int, held_out: int | float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(count)`` into (kept, held out); ``held_out`` is a count or a fraction below 1."""
    held = held_out if isinstance(held_out, int) else max(1, round(held_out * count))
    if not 0 < held < count:
        raise UserInputError(f"data.test_size={held_out} must leave images on both sides of {count} images")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held:]), sorted(order[:held])


class _FileDataModule(ImageDataModule):
    """Shared by the folder and CSV modules: the image conversion, and a test split from its own files or carved
    from the training files.

    Args:
        data_dir: the folder that holds the images (and the CSV files).
        channels, image_size, mean, std: the conversion of every image (see :func:`image_transform`).
        test_size: without separate test files, the images held out for testing: a count or a fraction below 1.
        **kwargs: see :class:`~project.data.ImageDataModule` (batch sizes, workers, val_size, few-shot, ...).
    """

    def __init__(
        self,
        data_dir: str,
        channels: int = 1,
        image_size: int = 28,
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
        test_size: int | float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.save_hyperparameters()
        self.transform = image_transform(channels, image_size, mean, std)
        self.image_shape = (channels, image_size, image_size)
        self.test_size = test_size

    def read(self, source: Path) -> Dataset:
        """The dataset stored at ``source`` (a folder or a file)."""
        raise NotImplementedError

    def sources(self) -> tuple[Path, Path | None]:
        """Where the training data is, and the test data if it is stored apart."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        train_source, _ = self.sources()
        if not train_source.exists():
            raise DataNotFoundError(f"{type(self).__name__}: {train_source.resolve()} does not exist (data.data_dir)")

    def load_split(self, train: bool) -> Dataset:
        train_source, test_source = self.sources()
        if test_source is not None:
            return self.read(train_source if train else test_source)
        full = self.read(train_source)
        kept, held = carve(len(full), self.test_size, self.split_seed + 1)
        return Subset(full, kept if train else held)


def _labels(dataset: Dataset) -> Tensor:
    if isinstance(dataset, Subset):
        return _labels(dataset.dataset)[torch.as_tensor(dataset.indices)]
    return torch.as_tensor(dataset.targets)


class ImageFolderDataModule(_FileDataModule):
    """Classify a user's images, sorted into one sub-folder per class (PNG, JPEG and the other formats PIL reads).

    Layout: ``data_dir/train/<class>/...`` and ``data_dir/test/<class>/...``, or ``data_dir/<class>/...`` alone, in
    which case ``test_size`` images are held out (seeded) for testing. Class indices follow the sorted folder names.
    With exactly two classes the task is binary (class index 1 is the positive class); with more, multiclass.
    """

    def __init__(self, data_dir: str, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        train_source, _ = self.sources()
        self.classes = sorted(p.name for p in train_source.iterdir() if p.is_dir()) if train_source.is_dir() else []
        if not self.classes:
            raise DataNotFoundError(
                f"ImageFolderDataModule: no class sub-folders in {train_source.resolve()}; expected "
                f"{train_source}/<class name>/<image files>"
            )
        if len(self.classes) < 2:
            raise UserInputError(
                f"ImageFolderDataModule: found one class ({self.classes[0]}); a task needs two or more"
            )
        self.num_classes = len(self.classes)

    @property
    def task(self) -> Task:
        return "binary" if self.positive_classes or self.num_classes == 2 else "multiclass"

    @property
    def class_names(self) -> list[str]:
        return ["other", "positive"] if self.positive_classes else list(self.classes)

    def sources(self) -> tuple[Path, Path | None]:
        if (self.data_dir / "train").is_dir():
            test = self.data_dir / "test"
            return self.data_dir / "train", test if test.is_dir() else None
        return self.data_dir, None

    def read(self, source: Path) -> Dataset:
        try:
            folder = datasets.ImageFolder(str(source), transform=self.transform)
        except FileNotFoundError as error:  # torchvision: "Found no valid file for the classes ..."
            raise UserInputError(f"ImageFolderDataModule: {source}: {error}") from None
        for path, _ in folder.samples:  # a broken file stops the run now, not hours into training
            check_image(Path(path))
        if folder.classes != self.classes:
            raise UserInputError(
                f"ImageFolderDataModule: {source} has classes {folder.classes}, but the training folder has "
                f"{self.classes}; both must have the same class sub-folders"
            )
        return folder

    def split_labels(self, dataset: Dataset) -> Tensor:
        return _labels(dataset)


def check_image(path: Path) -> None:
    """Refuse a file PIL cannot read as an image, naming it."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:
        raise UserInputError(f"{path} is not a readable image ({type(error).__name__}: {error})") from None


class CSVImages(Dataset):
    """Rows of ``image,target`` from a CSV file; image paths are relative to the CSV's folder."""

    def __init__(self, csv_path: Path, transform: transforms.Compose) -> None:
        self.transform = transform
        with csv_path.open(newline="") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames is None or not {"image", "target"} <= set(reader.fieldnames):
                raise UserInputError(f"{csv_path}: the first line must name the columns image,target")
            rows = list(reader)
        if not rows:
            raise UserInputError(f"{csv_path}: no rows after the header")
        self.paths = [csv_path.parent / row["image"] for row in rows]
        for path in self.paths:
            check_image(path)
        try:
            self.targets = [float(row["target"]) for row in rows]
        except ValueError as error:
            raise UserInputError(f"{csv_path}: every target must be a number ({error})") from None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, float]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image), self.targets[index]


class CSVRegressionDataModule(_FileDataModule):
    """Regression on a user's images: ``data_dir/train.csv`` (and optionally ``data_dir/test.csv``) with the columns
    ``image,target``; without ``test.csv``, ``test_size`` rows are held out (seeded) for testing."""

    default_task: Task = "regression"

    def sources(self) -> tuple[Path, Path | None]:
        test = self.data_dir / "test.csv"
        return self.data_dir / "train.csv", test if test.is_file() else None

    def read(self, source: Path) -> Dataset:
        return CSVImages(source, self.transform)

    def split_labels(self, dataset: Dataset) -> None:
        return None

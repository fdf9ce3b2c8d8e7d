"""A user's own data: a folder of images sorted by class, or a CSV of image paths and numeric targets.

Images are converted to what the network takes, as the config says: ``channels`` (1 = greyscale, 3 = RGB) and a
square ``image_size`` (resized, aspect ratio not kept), then normalised with ``mean`` and ``std`` on every channel.
The defaults (1 channel, 28x28, MNIST's mean and std) match a backbone pretrained on MNIST.

Every image is decoded once, when the data is set up (before training starts): a file that cannot be decoded is
named then, with all the others, rather than hours into training. The decoded images (uint8, already converted and
resized) stay in memory up to ``max_memory_mb``, so later epochs decode nothing; beyond it they are decoded again on
each access.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import functional as TF

from project.data import ImageDataModule, Task
from project.errors import DataNotFoundError, UserInputError, first_line

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
LARGEST_TARGET = 1e18
"""Regression targets beyond this are refused: their squared error would overflow float32 (the MSE would be inf)."""


@dataclass(frozen=True)
class ImageConversion:
    """From an image file to a ``channels`` x ``image_size`` x ``image_size`` tensor, normalised with mean and std."""

    channels: int = 1
    image_size: int = 28
    mean: float = MNIST_MEAN
    std: float = MNIST_STD

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UserInputError(f"data.channels must be 1 (greyscale) or 3 (RGB), got {self.channels}")
        if self.image_size < 1:
            raise UserInputError(f"data.image_size must be a positive integer, got {self.image_size}")
        if not (math.isfinite(self.std) and self.std > 0) or not math.isfinite(self.mean):
            raise UserInputError(f"data.mean must be finite and data.std positive, got {self.mean} and {self.std}")

    def decode(self, path: Path) -> Tensor:
        """The file's pixels as uint8, converted and resized (bilinear, antialiased); raises if it cannot be decoded."""
        with Image.open(path) as image:
            image.load()  # decodes everything: verify() alone passes truncated or corrupt pixel data
            converted = image.convert("L" if self.channels == 1 else "RGB")
        resized = TF.resize(converted, [self.image_size, self.image_size], antialias=True)
        return TF.pil_to_tensor(resized)

    def normalise(self, pixels: Tensor) -> Tensor:
        return (pixels.float() / 255 - self.mean) / self.std


class FileImages(Dataset):
    """Images from files with their targets; each file decoded once here, every one that cannot be is named.

    ``targets`` is a tensor (class indices or regression values). The decoded pixels are kept when they fit in
    ``max_bytes``; otherwise each access decodes its file again.
    """

    def __init__(self, paths: list[Path], targets: Tensor, conversion: ImageConversion, max_bytes: int) -> None:
        self.paths = paths
        self.targets = targets
        self.conversion = conversion
        side = conversion.image_size
        keep = len(paths) * conversion.channels * side * side <= max_bytes
        decoded, broken = [], []
        for path in paths:
            try:
                pixels = conversion.decode(path)
            except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... depending on the format
                broken.append(f"{path} ({first_line(error)})")
                continue
            if keep:
                decoded.append(pixels)
        if broken:
            raise UserInputError(f"{len(broken)} images cannot be decoded: {'; '.join(broken)}")
        self.pixels = torch.stack(decoded) if keep and decoded else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        pixels = self.pixels[index] if self.pixels is not None else self.conversion.decode(self.paths[index])
        return self.conversion.normalise(pixels), self.targets[index].item()


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
        channels, image_size, mean, std: the conversion of every image (see :class:`ImageConversion`).
        test_size: without separate test files, the images held out for testing: a count or a fraction below 1.
        max_memory_mb: keep the decoded images of a split in memory up to this size (MiB).
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
        max_memory_mb: int = 4096,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.save_hyperparameters()
        self.conversion = ImageConversion(channels, image_size, mean, std)
        self.image_shape = (channels, image_size, image_size)
        self.test_size = test_size
        if max_memory_mb < 0:
            raise UserInputError(f"data.max_memory_mb must be 0 or more, got {max_memory_mb}")
        self.max_bytes = max_memory_mb * 2**20

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


def class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (links followed), leaving out hidden ones like .ipynb_checkpoints."""
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def image_files(folder: Path, root: Path, seen: set[Path]) -> list[Path]:
    """The image files under ``folder`` (inside the dataset folder ``root``), recursively and in sorted order.

    Links are followed once: a link to a folder inside ``root`` (or above it: a loop) is skipped, since its images
    are counted where they are; a file already in ``seen`` (the same file under another name) is not added again.
    """
    found: list[Path] = []
    pending = [folder]
    root = root.resolve()
    while pending:
        current = pending.pop()
        for entry in sorted(os.scandir(current), key=lambda entry: entry.name):
            path = Path(entry.path)
            real = path.resolve()
            if entry.is_dir():
                inside = real == root or root in real.parents or real in root.parents
                if not (entry.is_symlink() and inside) and real not in seen:
                    seen.add(real)
                    pending.append(path)
            elif entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS) and real not in seen:
                seen.add(real)
                found.append(path)
    return sorted(found)


class ImageFolderDataModule(_FileDataModule):
    """Classify a user's images, sorted into one sub-folder per class (PNG, JPEG and the other formats PIL reads).

    Layout: ``data_dir/train/<class>/...`` and ``data_dir/test/<class>/...``, or ``data_dir/<class>/...`` alone, in
    which case ``test_size`` images are held out (seeded) for testing. Class indices follow the sorted folder names.
    With exactly two classes the task is binary (class index 1 is the positive class); with more, multiclass.
    """

    def __init__(self, data_dir: str, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        train_source, _ = self.sources()
        self.classes = class_folders(train_source)
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
        classes = class_folders(source)
        if classes != self.classes:
            raise UserInputError(
                f"ImageFolderDataModule: {source} has classes {classes}, but the training folder has "
                f"{self.classes}; both must have the same class sub-folders"
            )
        paths, labels, seen = [], [], set()
        for index, name in enumerate(classes):
            files = image_files(source / name, source, seen)
            if not files:
                raise UserInputError(
                    f"ImageFolderDataModule: class folder {name} has no image files in {source} (looked for "
                    f"{', '.join(IMG_EXTENSIONS)})"
                )
            paths += files
            labels += [index] * len(files)
        return FileImages(paths, torch.tensor(labels), self.conversion, self.max_bytes)

    def split_labels(self, dataset: Dataset) -> Tensor:
        return _labels(dataset)


def read_regression_csv(csv_path: Path) -> tuple[list[Path], Tensor]:
    """Image paths (relative to the CSV's folder) and float targets from the columns ``image,target``.

    A UTF-8 byte-order mark is accepted; a target that is not a number, or not finite, is refused with its line.
    """
    paths, targets = [], []
    with csv_path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or not {"image", "target"} <= set(reader.fieldnames):
            raise UserInputError(f"{csv_path}: the first line must name the columns image,target")
        for row in reader:
            where = f"{csv_path} line {reader.line_num}"
            try:
                target = float(row["target"])
            except (TypeError, ValueError):
                raise UserInputError(f"{where}: target {row['target']!r} is not a number") from None
            if not math.isfinite(target) or abs(target) > LARGEST_TARGET:
                raise UserInputError(
                    f"{where}: target {row['target']!r} is not a finite number of at most {LARGEST_TARGET:g} in "
                    f"size (its squared error must fit in float32); rescale the targets"
                )
            paths.append(csv_path.parent / row["image"])
            targets.append(target)
    if not paths:
        raise UserInputError(f"{csv_path}: no rows after the header")
    return paths, torch.tensor(targets, dtype=torch.float32)


class CSVRegressionDataModule(_FileDataModule):
    """Regression on a user's images: ``data_dir/train.csv`` (and optionally ``data_dir/test.csv``) with the columns
    ``image,target``; without ``test.csv``, ``test_size`` rows are held out (seeded) for testing."""

    default_task: Task = "regression"

    def sources(self) -> tuple[Path, Path | None]:
        test = self.data_dir / "test.csv"
        return self.data_dir / "train.csv", test if test.is_file() else None

    def read(self, source: Path) -> Dataset:
        return FileImages(*read_regression_csv(source), self.conversion, self.max_bytes)

    def split_labels(self, dataset: Dataset) -> None:
        return None

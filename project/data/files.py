"""A user's own data: a folder of images sorted by class, or a CSV of image paths with a numeric target or with
yes/no label columns.

Images are converted to what the network takes, as the config says: ``channels`` (1 = greyscale, 3 = RGB) and a
square ``image_size`` (resized, aspect ratio not kept), then normalised with ``mean`` and ``std`` on every channel.
The defaults (1 channel, 28x28, MNIST's mean and std) match a backbone pretrained on MNIST.

Every image is decoded once, when the data is set up (before training starts; see :mod:`project.data.file_images`):
a file that cannot be decoded is named then, with all the others, rather than hours into training. The decoded images
go into a cache on disk (``data.decoded``: :class:`~project.data.file_images.DecodedImages`), which later runs open
instead of decoding; they are held in memory up to ``max_memory_mb``, and read from the cache by index beyond it.
Without a cache (``cache: false``, or a folder that cannot take one) images beyond ``max_memory_mb`` are decoded again
on access.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision.datasets.folder import IMG_EXTENSIONS

from project.data.base import ImageDataModule
from project.data.batches import read_whole
from project.data.decoding import (
    MNIST_MEAN,
    MNIST_STD,
    ImageConversion,
    check_mnist_style,
    class_folders,
    image_files,
)
from project.data.file_images import DecodedImages, FileImages
from project.data.labels import RelabelledTargets
from project.data.recording import piece, record_piece
from project.data.splits import subset_labels
from project.data.stream_order import ResumableSampler, held_order
from project.data.streaming import Streamed, check_chunks_or_files, check_data_dir, opened, read_manifest
from project.errors import DataNotFoundError, UserInputError

_LARGEST_TARGET = 1e18
"""Regression targets beyond this are refused: their squared error would overflow float32 (the MSE would be inf)."""


class FileDataModule(ImageDataModule):
    """Shared by the folder and CSV modules: the image conversion, where the decoded images are kept, and a test split
    from its own files or carved from the training files (``data.split.test_size``).

    Args:
        data_dir: the folder that holds the images (and the CSV files).
        channels, image_size, mean, std: the conversion of every image (see :class:`ImageConversion`); ``mean``
            and ``std`` are one number or one per channel, or ``null``: the backbone's (a library backbone states the
            normalisation its weights were trained with; see :meth:`adopt_normalisation`).
        mnist_style: make each image's digit look like MNIST's first (:mod:`project.data.digits`: light ink on
            black, fitted in 20x20, centred by mass in 28x28), for photos or scans of digits and an MNIST backbone.
        decoded: where the decoded images are kept (:class:`~project.data.file_images.DecodedImages`:
            ``max_memory_mb``, ``cache``, ``cache_dir``, ``cache_shared``).
        stream: train from litdata chunks of the images, written once, in a folder or object storage
            (:class:`~project.data.streaming.Streamed`: ``chunks``, ``cache_dir``, ``max_cache_gb``).
        **kwargs: see :class:`~project.data.ImageDataModule` (batch_size, split, labels, augment, loading).
    """

    def __init__(
        self,
        data_dir: str,
        channels: int = 1,
        image_size: int = 28,
        mean: float | list[float] | None = MNIST_MEAN,
        std: float | list[float] | None = MNIST_STD,
        mnist_style: bool = False,
        decoded: DecodedImages = DecodedImages(),
        stream: Streamed = Streamed(),
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.stream = piece(Streamed, stream, "data.stream")
        record_piece(self, "stream", self.stream)
        check_data_dir(data_dir, self.stream)
        self.manifest = read_manifest(self.stream) if self.stream.chunks is not None else None  # None: none written
        self.streamed_sets: dict[str, Dataset] | None = None
        self.prepare_data_per_node = self.stream.chunks is None  # chunks: written by one process of the whole run
        if mnist_style:
            check_mnist_style(channels)
        self.awaiting_normalisation = mean is None or std is None
        stated = (MNIST_MEAN, MNIST_STD) if self.awaiting_normalisation else (mean, std)  # replaced when adopted
        self.conversion = ImageConversion(channels, image_size, *stated, mnist_style=mnist_style)
        self.image_shape = (channels, image_size, image_size)
        self.decoded = piece(DecodedImages, decoded, "data.decoded")
        record_piece(self, "decoded", self.decoded)
        self.cache_dir = self.decoded.folder
        if self.decoded.cache_shared and not self.decoded.cache:
            rank_zero_info("note: data.decoded.cache_shared has no effect: data.decoded.cache is false (no cache)")
        self.read_sources: dict[Path, FileImages] = {}
        check_chunks_or_files(self)

    stored_names: list[str] | None = None
    """The class or label names the files give (class folders, label columns), kept with the chunks."""

    def streamed(self) -> dict[str, Dataset]:
        """The splits stored as chunks (``train``, and ``test`` where the source has its own), written first where
        there are none yet, and checked against the options and the files (:func:`~project.data.streaming.opened`)."""
        if self.streamed_sets is None:
            self.streamed_sets = opened(self)
        return self.streamed_sets

    def read(self, source: Path) -> FileImages:
        """The dataset stored at ``source`` (a folder or a file), decoded (or its cache opened) once per module."""
        if source not in self.read_sources:
            paths, targets = self.files(source)
            folder = source if source.is_dir() else source.parent  # a CSV's paths start from its folder
            shared = self.decoded.cache_shared
            cache = (self.cache_dir, source, folder, shared) if self.cache_dir is not None else None
            max_bytes = self.decoded.max_memory_mb * 2**20
            self.read_sources[source] = FileImages(paths, targets, self.conversion, max_bytes, cache)
        return self.read_sources[source]

    def files(self, source: Path) -> tuple[list[Path], Tensor]:
        """The image files stored at ``source`` and their targets, checked."""
        raise NotImplementedError

    def reads_slowly(self, dataset: Dataset) -> bool:
        while isinstance(dataset, Subset | RelabelledTargets):
            dataset = dataset.dataset
        return dataset.decodes_on_access

    def collation(self, dataset: Dataset) -> Callable[[Any], Any]:
        return read_whole  # FileImages reads whole batches, normalised together

    def normalisation(self) -> tuple[list[float], list[float]]:
        if self.awaiting_normalisation:
            raise UserInputError(
                "data.mean and data.std are null (the backbone's), but the network states no normalisation (only a "
                "library backbone does): set them, e.g. --data.init_args.mean [0.485,0.456,0.406] "
                "--data.init_args.std [0.229,0.224,0.225]"
            )
        return list(self.conversion.mean), list(self.conversion.std)

    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing(), "mnist_style": self.conversion.mnist_style}

    def adopt_normalisation(self, mean: list[float], std: list[float]) -> None:
        """Take the backbone's mean and std where ``data.mean`` / ``data.std`` are null; greyscale images (repeated
        to the backbone's three channels) take the channels' averages. Options that were given are kept."""
        if not self.awaiting_normalisation:
            return
        if self.conversion.channels == 1:
            mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
        given = self.hparams
        mean = mean if given.get("mean") is None else given["mean"]
        std = std if given.get("std") is None else given["std"]
        self.conversion = replace(self.conversion, mean=mean, std=std)
        self.awaiting_normalisation = False

    def sources(self) -> tuple[Path, Path | None]:
        """Where the training data is, and the test data if it is stored apart."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        train_source, _ = self.sources()
        if self.stream.chunks is not None:
            self.streamed()  # written once (Lightning calls this on one process per machine), before setup
        elif not train_source.exists():
            raise DataNotFoundError(f"{type(self).__name__}: {train_source.resolve()} does not exist (data.data_dir)")

    def training_sampler(self) -> ResumableSampler:
        return held_order(self, super().training_sampler())  # from chunks: their order (data.stream)

    def load_split(self, train: bool) -> Dataset:
        train_source, test_source = self.sources()
        if self.stream.chunks is not None:
            stored = self.streamed()
            if "test" in stored:
                return stored["train" if train else "test"]
            full = stored["train"]
        elif test_source is not None:
            return self.read(train_source if train else test_source)
        else:
            full = self.read(train_source)
        kept, held = self.split.test_split(len(full))
        return Subset(full, (kept if train else held).tolist())

    def base_dataset(self, dataset: Dataset) -> FileImages:
        while isinstance(dataset, Subset):
            dataset = dataset.dataset
        return dataset


class ImageFolderDataModule(FileDataModule):
    """Classify a user's images, sorted into one sub-folder per class (PNG, JPEG and the other formats PIL reads).

    Layout: ``data_dir/train/<class>/...`` and ``data_dir/test/<class>/...``, or ``data_dir/<class>/...`` alone, in
    which case ``data.split.test_size`` images are held out (seeded) for testing. Class indices follow the sorted
    folder names. With exactly two classes the task is binary (class index 1 is the positive class); with more,
    multiclass.
    """

    def __init__(self, data_dir: str, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        train_source, _ = self.sources()
        chunked = self.manifest is not None  # written already: the classes are the chunks'
        self.classes = self.manifest["names"] if chunked else class_folders(train_source, skip=self.cache_dir)
        self.stored_names = self.classes
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
    def task(self) -> str:
        return "binary" if self.num_classes == 2 and not self.labels.label_sets else super().task

    @property
    def named_classes(self) -> list[str]:
        return self.classes  # the class folders' names, in label order

    @property
    def dataset_name(self) -> str:
        return f"the images in {self.data_dir.resolve().name}/"

    def sources(self) -> tuple[Path, Path | None]:
        if (self.data_dir / "train").is_dir():
            test = self.data_dir / "test"
            return self.data_dir / "train", test if test.is_dir() else None
        return self.data_dir, None

    def files(self, source: Path) -> tuple[list[Path], Tensor]:
        classes = class_folders(source, skip=self.cache_dir)
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
        return paths, torch.tensor(labels)

    def split_labels(self, dataset: Dataset) -> Tensor:
        return subset_labels(dataset, self.base_dataset(dataset).targets)


def read_csv(
    csv_path: Path, columns: list[str] | None, allow_outside: bool = False
) -> tuple[list[Path], list[str], Tensor]:
    """Image paths (relative to the CSV's folder), the names of the value columns, and their values as a float tensor
    (rows x columns): the ``columns`` given, or every column but ``image``.

    A UTF-8 byte-order mark is accepted; a value that is not a number, or not finite, is refused with its line; so is
    a NUL byte (no file name or number holds one) and an image path that leads out of the CSV's folder (absolute,
    ``..``, a link out of it) unless ``allow_outside``: a CSV is data, and what it names is read.
    """
    paths, rows = [], []
    folder = csv_path.parent.resolve()
    with csv_path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        try:
            header = _text_cells([name.strip() for name in reader.fieldnames or []], f"{csv_path} line 1")
            wanted = columns or [name for name in header if name != "image"]
            if "image" not in header or not wanted or not set(wanted) <= set(header):
                raise UserInputError(
                    f"{csv_path}: the first line must name the columns image,{','.join(columns or ['<label>', '...'])}"
                )
            for row in reader:
                row = {key.strip(): value for key, value in row.items() if key is not None}
                where = f"{csv_path} line {reader.line_num}"
                _text_cells([row[name] or "" for name in ["image", *wanted]], where)
                rows.append([_csv_number(row[name], where, name) for name in wanted])
                paths.append(inside(csv_path.parent / (row["image"] or ""), folder, allow_outside, where))
        except csv.Error as error:  # a field beyond csv.field_size_limit(), a NUL byte, ...
            where = f"{csv_path} near line {reader.line_num + 1}"  # the reader counts the lines it has finished
            raise UserInputError(f"{where}: not a CSV file this can read ({error})") from None
    if not paths:
        raise UserInputError(f"{csv_path}: no rows after the header")
    return paths, wanted, torch.tensor(rows, dtype=torch.float32)


def _text_cells(cells: list[str], where: str) -> list[str]:
    """``cells``, refused when one holds a NUL byte: Python's csv module reads it as any other character (since 3.11),
    and a path holding one cannot be opened (``ValueError: embedded null byte``)."""
    for cell in cells:
        if "\0" in cell:
            raise UserInputError(f"{where}: not a CSV file this can read (a NUL byte in {cell[:100]!r})")
    return cells


def inside(path: Path, folder: Path, allow_outside: bool, where: str) -> Path:
    """``path``, refused when it leads out of ``folder`` (links resolved) and that is not allowed."""
    if not allow_outside and not path.resolve().is_relative_to(folder):
        raise UserInputError(
            f"{where}: the image {path} lies outside {folder}; a CSV's images are read from its folder only, unless "
            f"--data.init_args.allow_paths_outside true"
        )
    return path


def _csv_number(text: str | None, where: str, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserInputError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > _LARGEST_TARGET:
        raise UserInputError(
            f"{where}: {column} {text!r} is not a finite number of at most {_LARGEST_TARGET:g} in size (its squared "
            f"error must fit in float32); rescale the targets"
        )
    return value


class CSVRegressionDataModule(FileDataModule):
    """Regression on a user's images: ``data_dir/train.csv`` (and optionally ``data_dir/test.csv``) with the columns
    ``image,target``; without ``test.csv``, ``data.split.test_size`` rows are held out (seeded) for testing.

    Args:
        allow_paths_outside: read image paths that lead out of ``data_dir`` (absolute, ``..``, links out of it);
            off by default: a CSV names what is read, and it is data.
    """

    default_task = "regression"

    def __init__(self, data_dir: str, allow_paths_outside: bool = False, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.allow_paths_outside = allow_paths_outside

    def sources(self) -> tuple[Path, Path | None]:
        test = self.data_dir / "test.csv"
        return self.data_dir / "train.csv", test if test.is_file() else None

    def files(self, source: Path) -> tuple[list[Path], Tensor]:
        paths, _, values = read_csv(source, ["target"], self.allow_paths_outside)
        return paths, values[:, 0]

    def split_labels(self, dataset: Dataset) -> None:
        return None


class CSVMultilabelDataModule(CSVRegressionDataModule):
    """Several yes/no labels per image: ``data_dir/train.csv`` (and optionally ``test.csv``) with a column ``image``
    and one 0/1 column per label (``image,cat,dog,outdoors``); the label columns of ``train.csv`` name the labels."""

    default_task = "multilabel"

    def __init__(self, data_dir: str, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        train_csv, _ = self.sources()
        if self.manifest is not None:
            self.label_columns = self.stored_names = self.manifest["names"]
            self.num_classes = len(self.label_columns)
            return
        if not train_csv.is_file():
            raise DataNotFoundError(f"CSVMultilabelDataModule: {train_csv.resolve()} does not exist (data.data_dir)")
        try:
            with train_csv.open(newline="", encoding="utf-8-sig") as file:
                header = _text_cells(next(csv.reader(file), []), f"{train_csv} line 1")
        except csv.Error as error:  # a field beyond csv.field_size_limit(), ...: as read_csv says it
            raise UserInputError(f"{train_csv} line 1: not a CSV file this can read ({error})") from None
        self.label_columns = self.stored_names = [name.strip() for name in header if name.strip() != "image"]
        if not self.label_columns:
            raise UserInputError(f"{train_csv}: the first line must name the columns image,<label>,... (0/1 each)")
        self.num_classes = len(self.label_columns)

    @property
    def task(self) -> str:
        return "multilabel"

    @property
    def class_names(self) -> list[str]:
        return list(self.label_columns)

    @property
    def num_outputs(self) -> int:
        return len(self.label_columns)

    def files(self, source: Path) -> tuple[list[Path], Tensor]:
        paths, columns, values = read_csv(source, self.label_columns, self.allow_paths_outside)
        flags = values.long()
        if not torch.equal(flags.float(), values) or flags.min() < 0 or flags.max() > 1:
            row = int(((flags.float() != values) | (flags < 0) | (flags > 1)).any(dim=1).nonzero()[0])
            raise UserInputError(f"{source} line {row + 2}: every label column ({', '.join(columns)}) must be 0 or 1")
        return paths, flags

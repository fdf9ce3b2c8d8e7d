"""MNIST and its drop-in relatives from torchvision, as 1x28x28 images (or another square size).

Each dataset is one entry of :data:`TORCHVISION_DATASETS`: its torchvision class, where its files lie and how to
read them. Adding a relative is adding an entry; ``data.dataset`` accepts exactly the registry's names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.transforms import functional as TF

from project.data.base import DATA_DIR_ENV, ImageDataModule
from project.data.decoding import check_image_size
from project.data.in_memory import SplitTensors, unit_scaled
from project.data.recording import piece
from project.data.splits import Split, subset_labels
from project.errors import DataNotFoundError, UserInputError, first_line


def _transpose_image(image: Image.Image) -> Image.Image:
    """EMNIST stores its images transposed relative to MNIST; this puts them upright."""
    return image.transpose(Image.Transpose.TRANSPOSE)


@dataclass(frozen=True)
class _TorchvisionDataset:
    """How to load one torchvision dataset of 28x28-ish grey images, and where its files lie."""

    dataset_class: type[Dataset]
    folder: str
    """Folder under the data directory that holds the files."""
    files: tuple[str, ...]
    num_classes: int
    root_is_folder: bool = False
    """USPS reads its files from its ``root`` itself; the MNIST family from ``root/<ClassName>/raw``."""
    options: dict[str, Any] = field(default_factory=dict)
    label_offset: int = 0
    """Added to every label: EMNIST letters are numbered from 1."""
    transposed: bool = False
    """EMNIST images are stored transposed."""
    side: int = 28
    """Side length of the images as stored."""
    title: str = ""
    """The dataset's name as its authors write it ("Fashion-MNIST"), for report titles."""


def _idx_files(prefix: str = "", labels: str = "labels-idx1-ubyte") -> tuple[str, ...]:
    train, test = ("train", "t10k") if not prefix else (f"{prefix}-train", f"{prefix}-test")
    return tuple(f"{split}-{kind}" for split in (train, test) for kind in ("images-idx3-ubyte", labels))


TORCHVISION_DATASETS: dict[str, _TorchvisionDataset] = {
    "mnist": _TorchvisionDataset(datasets.MNIST, "MNIST/raw", _idx_files(), 10, title="MNIST"),
    "fashion_mnist": _TorchvisionDataset(
        datasets.FashionMNIST, "FashionMNIST/raw", _idx_files(), 10, title="Fashion-MNIST"
    ),
    "kmnist": _TorchvisionDataset(datasets.KMNIST, "KMNIST/raw", _idx_files(), 10, title="Kuzushiji-MNIST"),
    "emnist_letters": _TorchvisionDataset(
        datasets.EMNIST,
        "EMNIST/raw",
        _idx_files("emnist-letters"),
        26,
        options={"split": "letters"},
        label_offset=-1,
        transposed=True,
        title="EMNIST Letters",
    ),
    "emnist_balanced": _TorchvisionDataset(
        datasets.EMNIST,
        "EMNIST/raw",
        _idx_files("emnist-balanced"),
        47,
        options={"split": "balanced"},
        transposed=True,
        title="EMNIST Balanced",
    ),
    "qmnist": _TorchvisionDataset(
        datasets.QMNIST, "QMNIST/raw", _idx_files("qmnist", "labels-idx2-int"), 10, title="QMNIST"
    ),
    "usps": _TorchvisionDataset(
        datasets.USPS, "USPS", ("usps.bz2", "usps.t.bz2"), 10, root_is_folder=True, side=16, title="USPS"
    ),
}
_DatasetName = Literal[tuple(TORCHVISION_DATASETS)]  # the names are the registry's keys
_MNIST_SPLIT = Split(val_size=5000)
"""How the MNIST family is split by default: 5,000 of the training images (of MNIST's 60,000) for validation."""


def raw_pixels(dataset: Dataset) -> Tensor:
    """The uint8 pixels a torchvision dataset holds in memory, as an (N, H, W) tensor."""
    data = dataset.data
    return data if isinstance(data, Tensor) else torch.as_tensor(data)


def _raw_labels(dataset: Dataset) -> Tensor:
    """The class labels a torchvision dataset holds in memory (QMNIST: the first column, its class)."""
    targets = torch.as_tensor(dataset.targets)
    return targets[:, 0] if targets.ndim == 2 else targets


def apply(steps: list[Callable[[Image.Image], Image.Image]], image: Image.Image) -> Image.Image:
    for step in steps:
        image = step(image)
    return image


class _ShiftLabel:
    """Adds ``offset`` to a label (picklable, for DataLoader workers)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __call__(self, label: int) -> int:
        return int(label) + self.offset


class MNISTDataModule(ImageDataModule):
    """MNIST or one of its relatives from torchvision, as 1x28x28 images.

    ``dataset`` is one of ``mnist`` (digits), ``fashion_mnist`` (clothing), ``kmnist`` (Japanese cursive),
    ``emnist_letters`` (26 letters), ``emnist_balanced`` (47 digits and letters), ``qmnist`` (MNIST's 60,000 test
    images reconstructed) or ``usps`` (16x16 digits, resized to 28x28 bilinearly). Images are normalised with the mean
    and standard deviation of that dataset's training images (on the 0..1 scale), computed when it is loaded.

    Args:
        dataset: which dataset.
        download: download the files when they are missing (needs network access).
        image_size: side length the images are resized to (28 keeps the MNIST family as it is).
        split: as every data module's (:class:`~project.data.splits.Split`), with 5,000 of the training images held
            out for validation by default.
        **kwargs: see :class:`~project.data.ImageDataModule` (data_dir, batch_size, labels, augment, loading).
    """

    def __init__(
        self,
        dataset: _DatasetName = "mnist",
        download: bool = True,
        image_size: int = 28,
        split: Split = _MNIST_SPLIT,
        **kwargs: Any,
    ) -> None:
        if dataset not in TORCHVISION_DATASETS:
            raise UserInputError(f"data.dataset {dataset!r} is not known: use one of {', '.join(TORCHVISION_DATASETS)}")
        check_image_size(image_size)
        super().__init__(split=piece(Split, split, "data.split", _MNIST_SPLIT), **kwargs)
        self.dataset = dataset
        self.spec = TORCHVISION_DATASETS[dataset]
        self.download = download
        self.image_size = image_size
        self.num_classes = self.spec.num_classes
        self.mean_std: tuple[float, float] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.image_size, self.image_size)

    @property
    def named_classes(self) -> list[str] | None:
        """torchvision's names of the classes (Fashion-MNIST's clothes, EMNIST's letters), ``None`` for digits."""
        if self.spec.options.get("split"):
            return [name for name in datasets.EMNIST.classes_split_dict[self.spec.options["split"]] if name != "N/A"]
        if self.spec.dataset_class in (datasets.MNIST, datasets.QMNIST):
            return None
        names = getattr(self.spec.dataset_class, "classes", None)
        return list(names) if names else None

    @property
    def dataset_name(self) -> str:
        return self.spec.title

    @property
    def raw_folder(self) -> Path:
        return self.data_dir / self.spec.folder

    def missing_files(self) -> list[str]:
        """Names of the dataset's files that are not in :attr:`raw_folder`."""
        return [name for name in self.spec.files if not (self.raw_folder / name).is_file()]

    def files_ready(self) -> bool:
        return not self.missing_files()

    def torchvision_dataset(self, train: bool, download: bool = False) -> Dataset:
        root = self.raw_folder if self.spec.root_is_folder else self.data_dir
        return self.spec.dataset_class(str(root), train=train, download=download, **self.spec.options)

    def prepare_data(self) -> None:
        """Download the files if they are missing; stop with a clear message if that is impossible."""
        missing = self.missing_files()
        if not missing:
            return
        if not self.download:
            raise DataNotFoundError(self.not_found_message(missing, "downloading is switched off (data.download)"))
        try:
            for train in (True, False):
                self.torchvision_dataset(train, download=True)
        except Exception as error:  # torchvision raises RuntimeError, URLError or OSError depending on the failure
            raise DataNotFoundError(
                self.not_found_message(missing, f"the download failed ({first_line(error)})")
            ) from None

    def not_found_message(self, missing: list[str], why: str) -> str:
        name = self.spec.dataset_class.__name__
        return (
            f"{name} files not found: looked in {self.raw_folder.resolve()} for {', '.join(missing)}, and {why}.\n"
            f"  To provide them, either\n"
            f"  - copy the {name} files ({', '.join(missing)}) into that folder, or\n"
            f"  - point --data.data_dir or the {DATA_DIR_ENV} environment variable at a folder that holds "
            f"{self.spec.folder}/ (currently {self.data_dir}), or\n"
            f"  - run once with network access so torchvision can download them."
        )

    def load_split(self, train: bool) -> Dataset:
        missing = self.missing_files()
        if missing:  # setup() runs on every process; prepare_data() may have run on another machine
            raise DataNotFoundError(self.not_found_message(missing, "prepare_data() did not provide them"))
        if self.mean_std is None:  # the training images' statistics normalise every split
            pixels = unit_scaled(raw_pixels(self.torchvision_dataset(train=True)))
            self.mean_std = (pixels.mean().item(), pixels.std().item())
        dataset = self.torchvision_dataset(train)
        dataset.transform = self.transform()
        if self.spec.label_offset:
            dataset.target_transform = _ShiftLabel(self.spec.label_offset)
        return dataset

    def image_steps(self) -> list[Callable[[Image.Image], Image.Image]]:
        """What turns a stored image into one of this module's images: upright, at ``image_size``."""
        steps: list[Callable] = []
        if self.spec.transposed:
            steps.append(_transpose_image)
        if self.image_size != self.spec.side:
            steps.append(transforms.Resize((self.image_size, self.image_size), antialias=True))
        return steps

    def transform(self) -> Callable[[Image.Image], Tensor]:
        """A stored image as this module's uint8 pixels, one at a time (the DataLoader path)."""
        return transforms.Compose([*self.image_steps(), TF.pil_to_tensor])

    def normalisation(self) -> tuple[list[float], list[float]]:
        return [self.mean_std[0]], [self.mean_std[1]]

    def leaf_tensors(self, dataset: Dataset) -> SplitTensors:
        """The images as uint8 (decoded once: MNIST's own tensor, or each image through :meth:`image_steps`)."""
        steps = self.image_steps()
        if steps:
            pixels = torch.stack(
                [TF.pil_to_tensor(apply(steps, Image.fromarray(image.numpy()))) for image in raw_pixels(dataset)]
            )
        else:
            pixels = raw_pixels(dataset).unsqueeze(1)
        return SplitTensors(pixels, _raw_labels(dataset) + self.spec.label_offset)

    def split_labels(self, dataset: Dataset) -> Tensor:
        base = dataset
        while hasattr(base, "dataset"):  # a Subset, or a wrapper such as the rotation's
            base = base.dataset
        return subset_labels(dataset, _raw_labels(base) + self.spec.label_offset)

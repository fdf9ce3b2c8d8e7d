"""Data: where the files live, and the LightningDataModule that turns them into batches.

The data directory comes from ``--data.data_dir``, else the ``PROJECT_DATA_DIR`` environment variable, else
``./data``. Inside it the files use torchvision's own layout (``MNIST/raw/train-images-idx3-ubyte`` ...), so a folder
that torchvision downloaded into works as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import datasets, transforms

from project.errors import DataNotFoundError, UserInputError

DATA_DIR_ENV = "PROJECT_DATA_DIR"
"""Environment variable naming the data directory when ``--data.data_dir`` is not given."""

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
"""Pixel mean and standard deviation of the MNIST training images (after scaling to [0, 1])."""

Task = Literal["multiclass", "binary", "regression"]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory: the argument, else ``$PROJECT_DATA_DIR``, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path("data")


class MNISTDataModule(L.LightningDataModule):
    """MNIST digits: a fixed, seeded train/validation split of the 60,000 training images, and the 10,000 test images.

    Images are scaled to [0, 1] and normalised with the training set's mean and standard deviation. The split depends
    only on ``val_size`` and ``split_seed``, never on the global seed, so every run of a config validates on the same
    images.

    Args:
        data_dir: folder holding ``MNIST/raw/``; default ``$PROJECT_DATA_DIR``, else ``./data``.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and predict (no gradients, so it can be larger).
        num_workers: DataLoader worker processes; 0 loads in the main process, which is fastest for MNIST on a
            small CPU machine.
        val_size: how many of the 60,000 training images are held out for validation.
        split_seed: seed of the train/validation split.
        download: download the files when they are missing (needs network access).
    """

    dataset_class: type[datasets.MNIST] = datasets.MNIST
    task: Task = "multiclass"
    num_classes: int = 10

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        val_size: int = 5000,
        split_seed: int = 42,
        download: bool = True,
    ) -> None:
        super().__init__()
        for name, value in {
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
            "val_size": val_size,
        }.items():
            if value < 1:
                raise UserInputError(f"data.{name} must be a positive integer, got {value}")
        if num_workers < 0:
            raise UserInputError(f"data.num_workers must be 0 or more, got {num_workers}")
        self.save_hyperparameters()
        self.data_dir = resolve_data_dir(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.split_seed = split_seed
        self.download = download
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def num_outputs(self) -> int:
        """Size of the network's output layer for this data: one logit per class, or one value."""
        return self.num_classes if self.task == "multiclass" else 1

    @property
    def raw_folder(self) -> Path:
        return self.data_dir / self.dataset_class.__name__ / "raw"

    def missing_files(self) -> list[str]:
        """Names of the dataset's raw files that are not in :attr:`raw_folder`."""
        names = [Path(url).name.removesuffix(".gz") for url, _ in self.dataset_class.resources]
        return [name for name in names if not (self.raw_folder / name).is_file()]

    def prepare_data(self) -> None:
        """Download the files if they are missing; stop with a clear message if that is impossible."""
        missing = self.missing_files()
        if not missing:
            return
        if not self.download:
            raise DataNotFoundError(self._not_found_message(missing, "downloading is switched off (data.download)"))
        try:
            for train in (True, False):
                self.dataset_class(str(self.data_dir), train=train, download=True)
        except Exception as error:  # torchvision raises RuntimeError, URLError or OSError depending on the failure
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataNotFoundError(self._not_found_message(missing, f"the download failed ({reason})")) from None

    def _not_found_message(self, missing: list[str], why: str) -> str:
        name = self.dataset_class.__name__
        return (
            f"{name} files not found: looked in {self.raw_folder.resolve()} for {', '.join(missing)}, "
            f"and {why}.\n"
            f"To provide them, either\n"
            f"  - copy the {name} IDX files ({', '.join(missing)}) into that folder, or\n"
            f"  - point --data.data_dir or the {DATA_DIR_ENV} environment variable at a folder that holds "
            f"{name}/raw/ (currently {self.data_dir}), or\n"
            f"  - run once with network access so torchvision can download them."
        )

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.train_set is None:
            full_train = self._dataset(train=True)
            if self.val_size >= len(full_train):
                raise UserInputError(
                    f"data.val_size={self.val_size} leaves no training images: the training split has "
                    f"{len(full_train)} images, so val_size must be below that"
                )
            lengths = [len(full_train) - self.val_size, self.val_size]
            split = random_split(full_train, lengths, generator=torch.Generator().manual_seed(self.split_seed))
            self.train_set, self.val_set = split
        if stage in ("test", "predict") and self.test_set is None:
            self.test_set = self._dataset(train=False)

    def _dataset(self, train: bool) -> datasets.MNIST:
        missing = self.missing_files()
        if missing:  # setup() runs on every process; prepare_data() may have run on another machine
            raise DataNotFoundError(self._not_found_message(missing, "prepare_data() did not provide them"))
        return self.dataset_class(str(self.data_dir), train=train, transform=self.transform, download=False)

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() with the matching stage before asking for a dataloader")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

"""Data: where the files live, and the LightningDataModules that turn them into batches.

The data directory comes from ``--data.data_dir``, else the ``PROJECT_DATA_DIR`` environment variable, else
``./data``. Inside it the files use torchvision's own layout (``MNIST/raw/train-images-idx3-ubyte`` ...), so a folder
that torchvision downloaded into works as it is.

:class:`ImageDataModule` holds what every dataset shares: the seeded train/validation split, few-shot subsets of the
training split, binary targets from a class rule, and the loaders. :class:`MNISTDataModule` serves MNIST and its
drop-in relatives from torchvision; :mod:`project.user_data` serves a user's own image folder or CSV.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms
from torchvision.transforms import functional as TF

from project.errors import DataNotFoundError, UserInputError, first_line
from project.resume import ResumableDataLoader, ResumableSampler, trainer_position

DATA_DIR_ENV = "PROJECT_DATA_DIR"
"""Environment variable naming the data directory when ``--data.data_dir`` is not given."""

Task = Literal["multiclass", "binary", "regression"]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory: the argument, else ``$PROJECT_DATA_DIR``, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path("data")


def few_shot_indices(
    labels: Tensor, samples_per_class: int | None, train_fraction: float | None, seed: int
) -> Tensor | None:
    """Positions (into ``labels``) of a seeded, stratified subset; ``None`` when neither limit is set.

    ``samples_per_class`` keeps that many examples of every class; ``train_fraction`` keeps that fraction of every
    class (at least one). The choice depends only on ``seed``, so a run with more samples per class sees a superset.
    """
    if samples_per_class is None and train_fraction is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique(sorted=True).tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        if samples_per_class is not None:
            if samples_per_class > len(members):
                raise UserInputError(
                    f"data.samples_per_class={samples_per_class}, but class {label} has only {len(members)} "
                    f"training images; use at most {len(members)} or train_fraction"
                )
            count = samples_per_class
        else:
            count = max(1, round(train_fraction * len(members)))
        chosen.append(members[:count])
    return torch.cat(chosen).sort().values


class MappedTargets(Dataset):
    """A dataset whose targets pass through ``target_fn`` (e.g. a class -> 0/1 rule for a binary task)."""

    def __init__(self, dataset: Dataset, target_fn: Callable[[Any], Any]) -> None:
        self.dataset = dataset
        self.target_fn = target_fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.dataset[index]
        return image, self.target_fn(target)


class InClasses:
    """Binary target: 1 if the class is one of ``positive_classes``, else 0 (picklable, for DataLoader workers)."""

    def __init__(self, positive_classes: Sequence[int]) -> None:
        self.positive_classes = frozenset(positive_classes)

    def __call__(self, label: int) -> int:
        return int(label in self.positive_classes)


class ImageDataModule(L.LightningDataModule):
    """What every dataset here shares: the split, few-shot subsets, binary rules and the loaders.

    A subclass provides :meth:`prepare_data` (make the files available), :meth:`load_split` (the training or test
    split as a dataset of ``(image tensor, target)``), :meth:`split_labels` (class labels for stratification) and
    :attr:`num_classes`.

    Args:
        data_dir: the data directory; default ``$PROJECT_DATA_DIR``, else ``./data``.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and predict (no gradients, so it can be larger).
        num_workers: DataLoader worker processes; 0 loads in the main process, fastest for small images on a
            small CPU machine.
        val_size: images held out of the training split for validation: a count, or a fraction below 1.
        split_seed: seed of the train/validation split and of the few-shot subset.
        samples_per_class: keep only this many training images per class (stratified, seeded).
        train_fraction: keep only this fraction of the training images of each class (stratified, seeded).
        positive_classes: turn the task into binary classification: target 1 for these classes, 0 for the rest
            (e.g. ``[5, 6, 7, 8, 9]`` for "digit >= 5").
        augment_shift: augment training batches with random shifts of up to this many pixels (0: off).
        shuffle_seed: seed of the training order and the augmentation; default: the run's ``seed_everything``.
    """

    default_task: Task = "multiclass"

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        val_size: int | float = 0.1,
        split_seed: int = 42,
        samples_per_class: int | None = None,
        train_fraction: float | None = None,
        positive_classes: list[int] | None = None,
        augment_shift: int = 0,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__()
        if augment_shift < 0:
            raise UserInputError(f"data.augment_shift must be 0 or more pixels, got {augment_shift}")
        if positive_classes and self.default_task == "regression":
            raise UserInputError(
                f"data.positive_classes makes a binary task; {type(self).__name__} is a regression task"
            )
        for name, value in {"batch_size": batch_size, "eval_batch_size": eval_batch_size}.items():
            if value < 1:
                raise UserInputError(f"data.{name} must be a positive integer, got {value}")
        if num_workers < 0:
            raise UserInputError(f"data.num_workers must be 0 or more, got {num_workers}")
        if not (val_size >= 1 if isinstance(val_size, int) else 0 < val_size < 1):
            raise UserInputError(f"data.val_size must be a count of 1 or more, or a fraction in (0, 1), got {val_size}")
        if samples_per_class is not None and train_fraction is not None:
            raise UserInputError("data.samples_per_class and data.train_fraction exclude each other: set one")
        if samples_per_class is not None and samples_per_class < 1:
            raise UserInputError(f"data.samples_per_class must be a positive integer, got {samples_per_class}")
        if train_fraction is not None and not 0 < train_fraction <= 1:
            raise UserInputError(f"data.train_fraction must lie in (0, 1], got {train_fraction}")
        self.data_dir = resolve_data_dir(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.split_seed = split_seed
        self.samples_per_class = samples_per_class
        self.train_fraction = train_fraction
        self.positive_classes = positive_classes
        self.augment_shift = augment_shift
        self.shuffle_seed = shuffle_seed if shuffle_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.augment_generator = torch.Generator().manual_seed(self.shuffle_seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- what a subclass provides ------------------------------------------------------------------------------
    num_classes: int = 0

    def load_split(self, train: bool) -> Dataset:
        """The training (``train=True``) or test split, yielding ``(image tensor, target)``."""
        raise NotImplementedError

    def split_labels(self, dataset: Dataset) -> Tensor | None:
        """Class labels of ``dataset`` (as returned by :meth:`load_split`), or ``None`` for regression."""
        raise NotImplementedError

    # -- derived from the arguments ----------------------------------------------------------------------------
    @property
    def task(self) -> Task:
        return "binary" if self.positive_classes else self.default_task

    @property
    def class_names(self) -> list[str]:
        """Names of the classes the task is about (``positive_classes`` make two: ``other`` and ``positive``)."""
        if self.task == "binary" and self.positive_classes:
            return ["other", "positive"]
        return [str(index) for index in range(self.num_classes)]

    @property
    def num_outputs(self) -> int:
        """Size of the network's output layer for this data: one logit per class, or one value."""
        return self.num_classes if self.task == "multiclass" else 1

    def check_positive_classes(self) -> None:
        if not self.positive_classes:
            return
        outside = [c for c in self.positive_classes if not 0 <= c < self.num_classes]
        if outside:
            raise UserInputError(
                f"data.positive_classes {outside} are not classes of this data: use values in 0..{self.num_classes - 1}"
            )
        if len(set(self.positive_classes)) == self.num_classes:
            raise UserInputError("data.positive_classes names every class: the negative class would be empty")

    def files_ready(self) -> bool:
        """Whether :meth:`setup` can read the data now (no download pending)."""
        return True

    # -- Lightning hooks ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load and check the splits the stage needs; fitting loads the test split too, so that a broken test split
        stops the run before it trains rather than after."""
        self.check_positive_classes()
        if stage in (None, "fit", "validate") and self.train_set is None:
            self.train_set, self.val_set = self._split_train(self.checked(self.load_split(train=True), "training"))
        if self.test_set is None:
            self.test_set = self._binary(self.checked(self.load_split(train=False), "test"))

    def checked(self, dataset: Dataset, split: str) -> Dataset:
        """``dataset``, after checking that its labels are classes of this data (0 .. num_classes - 1)."""
        labels = self.split_labels(dataset)
        if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            outside = labels[(labels < 0) | (labels >= self.num_classes)].unique().tolist()
            raise UserInputError(
                f"the {split} split of {type(self).__name__} has labels {outside[:10]} outside its "
                f"{self.num_classes} classes (0..{self.num_classes - 1}): the files do not match the dataset"
            )
        return dataset

    def _split_train(self, full_train: Dataset) -> tuple[Dataset, Dataset]:
        total = len(full_train)
        val_count = self.val_size if isinstance(self.val_size, int) else max(1, round(self.val_size * total))
        if val_count >= total:
            raise UserInputError(
                f"data.val_size={self.val_size} leaves no training images: the training split has {total} images, "
                f"so val_size must be below that"
            )
        order = torch.randperm(total, generator=torch.Generator().manual_seed(self.split_seed))
        train_indices, val_indices = order[val_count:].sort().values, order[:val_count].sort().values
        labels = self.split_labels(full_train)
        if labels is None and self.samples_per_class is not None:
            raise UserInputError("data.samples_per_class needs class labels; for regression use data.train_fraction")
        subset_labels = labels[train_indices] if labels is not None else torch.zeros(len(train_indices))
        keep = few_shot_indices(subset_labels, self.samples_per_class, self.train_fraction, self.split_seed)
        if keep is not None:
            train_indices = train_indices[keep]
        train = self._binary(Subset(full_train, train_indices.tolist()))
        val = self._binary(Subset(full_train, val_indices.tolist()))
        return train, val

    def _binary(self, dataset: Dataset) -> Dataset:
        return MappedTargets(dataset, InClasses(self.positive_classes)) if self.positive_classes else dataset

    def _loader(self, dataset: Dataset | None, batch_size: int, sampler: ResumableSampler | None = None) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() with the matching stage before asking for a dataloader")
        loader_class = ResumableDataLoader if sampler is not None else DataLoader
        return loader_class(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator(),  # worker seeds drawn from here, not from the global generator
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = ResumableSampler(
            self.train_set,
            seed=self.shuffle_seed,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            position=(lambda: trainer_position(trainer, self.batch_size)) if trainer else None,
        )
        return self._loader(self.train_set, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not self.augment_shift or self.trainer is None or not self.trainer.training:
            return batch
        if not isinstance(batch, list | tuple) or len(batch) != 2:
            return batch  # not a training batch: e.g. the example input TensorBoard traces the graph with
        images, targets = batch
        return random_shift(images, self.augment_shift, self.augment_generator), targets

    def state_dict(self) -> dict[str, Any]:
        return {"augment_generator": self.augment_generator.get_state(), "shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.augment_generator.set_state(state_dict["augment_generator"])


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


# -- MNIST and its relatives from torchvision --------------------------------------------------------------------


def transpose_image(image: Image.Image) -> Image.Image:
    """EMNIST stores its images transposed relative to MNIST; this puts them upright."""
    return image.transpose(Image.Transpose.TRANSPOSE)


@dataclass(frozen=True)
class TorchvisionDataset:
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


def _idx_files(prefix: str = "", labels: str = "labels-idx1-ubyte") -> tuple[str, ...]:
    train, test = ("train", "t10k") if not prefix else (f"{prefix}-train", f"{prefix}-test")
    return tuple(f"{split}-{kind}" for split in (train, test) for kind in ("images-idx3-ubyte", labels))


TORCHVISION_DATASETS: dict[str, TorchvisionDataset] = {
    "mnist": TorchvisionDataset(datasets.MNIST, "MNIST/raw", _idx_files(), 10),
    "fashion_mnist": TorchvisionDataset(datasets.FashionMNIST, "FashionMNIST/raw", _idx_files(), 10),
    "kmnist": TorchvisionDataset(datasets.KMNIST, "KMNIST/raw", _idx_files(), 10),
    "emnist_letters": TorchvisionDataset(
        datasets.EMNIST,
        "EMNIST/raw",
        _idx_files("emnist-letters"),
        26,
        options={"split": "letters"},
        label_offset=-1,
        transposed=True,
    ),
    "emnist_balanced": TorchvisionDataset(
        datasets.EMNIST,
        "EMNIST/raw",
        _idx_files("emnist-balanced"),
        47,
        options={"split": "balanced"},
        transposed=True,
    ),
    "qmnist": TorchvisionDataset(datasets.QMNIST, "QMNIST/raw", _idx_files("qmnist", "labels-idx2-int"), 10),
    "usps": TorchvisionDataset(datasets.USPS, "USPS", ("usps.bz2", "usps.t.bz2"), 10, root_is_folder=True, side=16),
}
DatasetName = Literal["mnist", "fashion_mnist", "kmnist", "emnist_letters", "emnist_balanced", "qmnist", "usps"]


def raw_pixels(dataset: Dataset) -> Tensor:
    """The uint8 pixels a torchvision dataset holds in memory, as an (N, H, W) tensor."""
    data = dataset.data
    return data if isinstance(data, Tensor) else torch.as_tensor(data)


def raw_labels(dataset: Dataset) -> Tensor:
    """The class labels a torchvision dataset holds in memory (QMNIST: the first column, its class)."""
    targets = torch.as_tensor(dataset.targets)
    return targets[:, 0] if targets.ndim == 2 else targets


class MNISTDataModule(ImageDataModule):
    """MNIST or one of its relatives from torchvision, as 1x28x28 images.

    ``dataset`` is one of ``mnist`` (digits), ``fashion_mnist`` (clothing), ``kmnist`` (Japanese cursive),
    ``emnist_letters`` (26 letters), ``emnist_balanced`` (47 digits and letters), ``qmnist`` (MNIST's 60,000 test
    images reconstructed) or ``usps`` (16x16 digits, resized to 28x28 bilinearly). Images are scaled to [0, 1] and
    normalised with the mean and standard deviation of that dataset's training images, computed when it is loaded.

    Args:
        dataset: which dataset.
        download: download the files when they are missing (needs network access).
        image_size: side length the images are resized to (28 keeps the MNIST family as it is).
        val_size: validation images held out of the training split (5,000 of MNIST's 60,000 by default).
        **kwargs: see :class:`ImageDataModule` (data_dir, batch sizes, workers, few-shot, positive_classes).
    """

    def __init__(
        self,
        dataset: DatasetName = "mnist",
        download: bool = True,
        image_size: int = 28,
        val_size: int | float = 5000,
        **kwargs: Any,
    ) -> None:
        if dataset not in TORCHVISION_DATASETS:
            raise UserInputError(f"data.dataset {dataset!r} is not known: use one of {', '.join(TORCHVISION_DATASETS)}")
        if image_size < 1:
            raise UserInputError(f"data.image_size must be a positive integer, got {image_size}")
        super().__init__(val_size=val_size, **kwargs)
        self.save_hyperparameters()
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
    def class_names(self) -> list[str]:
        names = getattr(self.spec.dataset_class, "classes", None)
        if self.spec.options.get("split"):
            names = [name for name in datasets.EMNIST.classes_split_dict[self.spec.options["split"]] if name != "N/A"]
        if self.task == "binary" or self.spec.dataset_class in (datasets.MNIST, datasets.QMNIST) or not names:
            return super().class_names
        return list(names)

    @property
    def raw_folder(self) -> Path:
        return self.data_dir / self.spec.folder

    def missing_files(self) -> list[str]:
        """Names of the dataset's files that are not in :attr:`raw_folder`."""
        return [name for name in self.spec.files if not (self.raw_folder / name).is_file()]

    def files_ready(self) -> bool:
        return not self.missing_files()

    def _torchvision_dataset(self, train: bool, download: bool = False) -> Dataset:
        root = self.raw_folder if self.spec.root_is_folder else self.data_dir
        return self.spec.dataset_class(str(root), train=train, download=download, **self.spec.options)

    def prepare_data(self) -> None:
        """Download the files if they are missing; stop with a clear message if that is impossible."""
        missing = self.missing_files()
        if not missing:
            return
        if not self.download:
            raise DataNotFoundError(self._not_found_message(missing, "downloading is switched off (data.download)"))
        try:
            for train in (True, False):
                self._torchvision_dataset(train, download=True)
        except Exception as error:  # torchvision raises RuntimeError, URLError or OSError depending on the failure
            raise DataNotFoundError(
                self._not_found_message(missing, f"the download failed ({first_line(error)})")
            ) from None

    def _not_found_message(self, missing: list[str], why: str) -> str:
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
            raise DataNotFoundError(self._not_found_message(missing, "prepare_data() did not provide them"))
        if self.mean_std is None:  # the training images' statistics normalise every split
            pixels = raw_pixels(self._torchvision_dataset(train=True)).float().div_(255)
            self.mean_std = (pixels.mean().item(), pixels.std().item())
        dataset = self._torchvision_dataset(train)
        dataset.transform = self.transform()
        if self.spec.label_offset:
            dataset.target_transform = ShiftLabel(self.spec.label_offset)
        return dataset

    def transform(self) -> Callable[[Image.Image], Tensor]:
        steps: list[Callable] = []
        if self.spec.transposed:
            steps.append(transpose_image)
        if self.image_size != self.spec.side:
            steps.append(transforms.Resize((self.image_size, self.image_size), antialias=True))
        steps += [TF.to_tensor, transforms.Normalize((self.mean_std[0],), (self.mean_std[1],))]
        return transforms.Compose(steps)

    def split_labels(self, dataset: Dataset) -> Tensor:
        return raw_labels(dataset) + self.spec.label_offset


class ShiftLabel:
    """Adds ``offset`` to a label (picklable, for DataLoader workers)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __call__(self, label: int) -> int:
        return int(label) + self.offset


class RotatedImages(Dataset):
    """Each image rotated by an angle drawn once per index from a seeded uniform distribution; target = angle / max.

    ``dataset`` yields PIL images; each is rotated (counter-clockwise, black corners), then passed to ``transform``.
    The angles depend only on ``seed``, so every epoch and every run sees the same ones.
    """

    def __init__(self, dataset: Dataset, max_angle: float, seed: int, transform: Callable) -> None:
        self.dataset = dataset
        self.max_angle = max_angle
        self.transform = transform
        generator = torch.Generator().manual_seed(seed)
        self.angles = ((torch.rand(len(dataset), generator=generator) * 2 - 1) * max_angle).tolist()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, float]:
        image, _ = self.dataset[index]
        angle = self.angles[index]
        rotated = image.rotate(angle, resample=Image.Resampling.BILINEAR)
        return self.transform(rotated), angle / self.max_angle


class RotationDataModule(MNISTDataModule):
    """Regression on real images: predict the angle by which an image of ``dataset`` was rotated.

    Each image is rotated by an angle in ``[-max_angle, max_angle]`` degrees; the target is the angle divided by
    ``max_angle`` (so it lies in [-1, 1]). The network learns what an upright digit (or shirt) looks like.
    """

    default_task: Task = "regression"

    def __init__(self, max_angle: float = 45.0, angle_seed: int = 0, **kwargs: Any) -> None:
        if not 0 < max_angle <= 180:
            raise UserInputError(f"data.max_angle must lie in (0, 180] degrees, got {max_angle}")
        if kwargs.get("positive_classes") or kwargs.get("samples_per_class"):
            raise UserInputError(
                "RotationDataModule is a regression task: positive_classes and samples_per_class do not apply"
            )
        super().__init__(**kwargs)
        self.max_angle = max_angle
        self.angle_seed = angle_seed

    def load_split(self, train: bool) -> Dataset:
        dataset = super().load_split(train)
        transform, dataset.transform = dataset.transform, None  # rotate the PIL image first, then convert it
        return RotatedImages(dataset, self.max_angle, self.angle_seed + (0 if train else 1), transform)

    def split_labels(self, dataset: Dataset) -> None:
        return None

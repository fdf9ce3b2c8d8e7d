"""What every data module shares: the data directory, the train/validation split and few-shot subset (see
:mod:`project.data.splits`), label rules (binary and multilabel targets from class rules), the loaders and batch
augmentation of training batches (:mod:`project.data.augment`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from project.data.augment import BatchAugmentation, batch_seed, random_shift
from project.data.cores import available_cores
from project.data.in_memory import DeviceBatches, SplitTensors, TensorImages, memory_splits, normalised
from project.data.labels import ClassSubset, LabelRule, RelabelledTargets, check_label_options, check_label_rules
from project.data.recording import record_arguments
from project.data.sampler import ResumableDataLoader, ResumableSampler, TrainingPosition
from project.data.splits import check_split_options, few_shot_indices, seeded_split
from project.errors import UserInputError
from project.plain import PlainData
from project.tasks import TASKS

DATA_DIR_ENV = "PROJECT_DATA_DIR"
"""Environment variable naming the data directory when ``--data.data_dir`` is not given."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory: the argument, else ``$PROJECT_DATA_DIR``, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    return Path(from_env).expanduser() if from_env else Path("data")


class ImageDataModule(L.LightningDataModule):
    """What every dataset here shares: the split, few-shot subsets, label rules and the loaders.

    A subclass provides :meth:`prepare_data` (make the files available), :meth:`load_split` (the training or test
    split as a dataset of ``(image tensor, target)``), :meth:`split_labels` (class labels for stratification) and
    :attr:`num_classes`. Everything else the project reads of a data module is declared below with its default, so
    nothing is probed for: :attr:`image_shape`, :meth:`normalisation`, :attr:`awaiting_normalisation` and
    :meth:`adopt_normalisation`, :meth:`leaf_tensors` (the in-memory path), :meth:`preprocessing`, :attr:`task`,
    :attr:`class_names`, :attr:`num_outputs`.

    The constructor records its arguments, and those of every subclass constructor that calls
    ``super().__init__(...)``, as the module's hyper-parameters (Lightning's ``save_hyperparameters``, here once for
    all, :mod:`project.data.recording`): checkpoints keep them, a resumed run is checked against them and
    ``python -m project evaluate`` rebuilds the module from them. A subclass need not call it, and may pass its parent
    values of its own (they are not recorded, since its class sets them); arguments that are Python objects, not plain
    values, are named in :attr:`unrecorded_arguments`, and those a config may give by class path in
    :attr:`class_arguments`.

    Args:
        data_dir: the data directory; default ``$PROJECT_DATA_DIR``, else ``./data``.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and predict (no gradients, so it can be larger).
        num_workers: DataLoader worker processes (the DataLoader path only); default: one per core (shared by
            this machine's training processes) where reading an image decodes a file, none otherwise (the main
            process reads tensors faster than workers could hand them over).
        val_size: images held out of the training split for validation: a count, or a fraction below 1.
        split_seed: seed of the train/validation split and of the few-shot subset.
        samples_per_class: keep only this many training images per class (stratified, seeded).
        train_fraction: keep only this fraction of the training images of each class (stratified, seeded).
        positive_classes: a binary task: target 1 for these classes, 0 for the rest (``[5, 6, 7, 8, 9]``: "digit >= 5").
        label_sets: a multilabel task: one yes/no label per entry, 1 when the class is in its list
            (``{even: [0, 2, 4, 6, 8], at_least_5: [5, 6, 7, 8, 9]}``).
        only_classes: keep only these classes, numbered 0..k-1 in this order (``[5, 6, 7, 8, 9]``: digits 5-9).
        augment_shift: augment training batches with random shifts of up to this many pixels (0: off); applied
            before ``augment``.
        shuffle_seed: seed of the training order and the augmentation; default: the run's ``seed_everything``.
        in_memory: hold every split as tensors on the training device and draw batches by index (the fast path;
            ``num_workers`` then does not apply); image files too large to hold are drawn by index from their cache on
            disk instead (:mod:`project.data.cache`); default: whenever the data can be (see
            :mod:`project.data.in_memory`); ``false``: load images one by one through a DataLoader.
        augment: torchvision ``transforms.v2`` transforms for training images, in order, each image its own random
            draw (:mod:`project.data.augment`): a class name or ``{class_path: ..., init_args: {...}}`` each, such
            as ``[{class_path: RandomResizedCrop, init_args: {size: 28, scale: [0.8, 1.0]}}, RandomErasing]``. They
            see float images on the 0..1 scale, before normalisation; validation, test and predict are untouched.
        mixup_alpha: MixUp training batches, each with a share drawn from Beta(alpha, alpha) (0: off; 0.2 is usual);
            the targets become class probabilities (multiclass tasks only).
        cutmix_alpha: CutMix training batches likewise (0: off; 1.0 is usual); with both, each batch takes one of the
            two at even odds.
    """

    default_task = "multiclass"

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        num_workers: int | None = None,
        val_size: int | float = 0.1,
        split_seed: int = 42,
        samples_per_class: int | None = None,
        train_fraction: float | None = None,
        positive_classes: list[int] | None = None,
        label_sets: dict[str, list[int]] | None = None,
        only_classes: list[int] | None = None,
        augment_shift: int = 0,
        shuffle_seed: int | None = None,
        in_memory: bool | None = None,
        augment: list[str | dict[str, PlainData]] | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
    ) -> None:
        super().__init__()
        record_arguments(self)
        check_split_options(batch_size, eval_batch_size, num_workers, val_size, samples_per_class, train_fraction)
        if augment_shift < 0:
            raise UserInputError(f"data.augment_shift must be 0 or more pixels, got {augment_shift}")
        check_label_options(type(self).__name__, self.default_task, positive_classes, label_sets, only_classes)
        self.augmentation = BatchAugmentation(augment, mixup_alpha, cutmix_alpha)
        self.data_dir = resolve_data_dir(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.split_seed = split_seed
        self.samples_per_class = samples_per_class
        self.train_fraction = train_fraction
        self.positive_classes = positive_classes
        self.label_sets = label_sets
        self.only_classes = only_classes
        self.augment_shift = augment_shift
        self.shuffle_seed = shuffle_seed if shuffle_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.augment_generator = torch.Generator().manual_seed(self.shuffle_seed)
        self.in_memory = in_memory
        self.memory: dict[str, SplitTensors] = {}
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- what a subclass provides ------------------------------------------------------------------------------
    num_classes: int = 0
    """Number of classes (or of yes/no labels); known once the module is built, since it sizes the network."""
    named_classes: list[str] | None = None
    """The classes' names in label order (a folder's class folders, ``data.class_names``); ``None``: numbered."""
    image_shape: tuple[int, int, int] | None = None
    """``(channels, height, width)`` of the images, square; ``None``: not known before :meth:`setup` (the network's
    input is then checked when the data is set up)."""
    awaiting_normalisation: bool = False
    """Whether the normalisation is still to come from the backbone (``data.mean`` / ``std`` null): the command line
    then calls :meth:`adopt_normalisation` with the mean and std the network states, before setting up the data."""
    unrecorded_arguments: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments kept out of the hyper-parameters: Python objects such as datasets or tensors, which a
    checkpoint cannot hold as plain values (such a module is built in Python, not rebuilt from a checkpoint)."""
    class_arguments: ClassVar[dict[str, type]] = {}
    """Of :attr:`unrecorded_arguments`, those a config may give by class path (``{class_path: ..., init_args: ...}``,
    built by the command line), with the class the named one must derive from: such an argument is recorded as its
    class path and plain arguments, and ``python -m project evaluate`` rebuilds it from them (a class already imported:
    ``project.training.checkpoints.allowed_class``)."""

    def load_split(self, train: bool) -> Dataset:
        """The training (``train=True``) or test split, yielding ``(image tensor, target)``."""
        raise NotImplementedError

    def split_labels(self, dataset: Dataset) -> Tensor | None:
        """Class labels of ``dataset`` (as returned by :meth:`load_split`, or a subset of it), or ``None``."""
        raise NotImplementedError

    def files_ready(self) -> bool:
        """Whether :meth:`setup` can read the data now (no download pending)."""
        return True

    def normalisation(self) -> tuple[list[float], list[float]]:
        """Mean and standard deviation per channel, which the in-memory path normalises with."""
        raise NotImplementedError

    def adopt_normalisation(self, mean: list[float], std: list[float]) -> None:
        """Take the backbone's ``mean`` and ``std`` (per channel), called only while :attr:`awaiting_normalisation`.
        Data that states its own normalisation never awaits one, so the base has nothing to adopt; a subclass that
        can await one (:class:`~project.data.files.FileDataModule`) overrides this."""
        if self.awaiting_normalisation:
            raise NotImplementedError(f"{type(self).__name__} awaits a normalisation but cannot adopt one")

    def preprocessing(self) -> dict[str, Any]:
        """What a new image goes through to be predicted as this data's images were, and the names of the outputs'
        classes or labels, as plain values: checkpoints and exports keep it (:mod:`project.inference.prediction`)."""
        mean, std = self.normalisation()
        channels, size, _ = self.image_shape  # square images
        return {"channels": channels, "image_size": size, "mean": mean, "std": std, "class_names": self.class_names}

    def leaf_tensors(self, dataset: Dataset) -> SplitTensors | None:
        """A dataset as :meth:`load_split` returns it, as tensors; ``None`` when it cannot be held in memory (it is not
        a :class:`~project.data.in_memory.TensorImages`, or its images were too big to keep)."""
        return dataset.tensors() if isinstance(dataset, TensorImages) else None

    def reads_slowly(self, dataset: Dataset) -> bool:
        """Whether reading an example of ``dataset`` (a split, as :meth:`setup` makes it) is real work, such as
        decoding a file, which DataLoader workers share out (see ``num_workers``); the base's datasets read tensors."""
        return False

    # -- derived from the arguments ----------------------------------------------------------------------------
    @property
    def task(self) -> str:
        if self.positive_classes:
            return "binary"
        return "multilabel" if self.label_sets else self.default_task

    @property
    def class_names(self) -> list[str]:
        """Names of the classes (or labels) the task is about."""
        if self.positive_classes:
            return ["other", "positive"]
        if self.label_sets:
            return list(self.label_sets)
        names = self.named_classes or [str(index) for index in range(self.num_classes)]
        return [names[index] for index in self.only_classes] if self.only_classes else list(names)

    @property
    def num_outputs(self) -> int:
        """Size of the network's output layer for this data: one per class or label, or one value."""
        classes = self.label_sets or self.only_classes or range(self.num_classes)
        return TASKS[self.task].outputs_for(len(classes))

    def label_rule(self) -> LabelRule | ClassSubset | None:
        if self.only_classes:
            return ClassSubset(self.only_classes)
        if self.positive_classes:
            return LabelRule({"positive": self.positive_classes}, binary=True)
        return LabelRule(self.label_sets, binary=False) if self.label_sets else None

    # -- Lightning hooks ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load and check the splits the stage needs; fitting loads the test split too, so that a broken test split
        stops the run before it trains rather than after."""
        check_label_rules(self.num_classes, self.positive_classes, self.label_sets, self.only_classes)
        if self.augmentation.mixes:
            self.augmentation.mix_with(self.task, self.num_outputs)
        if stage in (None, "fit", "validate") and self.train_set is None:
            self.train_set, self.val_set = self.split_train(self.checked(self.load_split(train=True), "training"))
        if self.test_set is None:
            test = self.checked(self.load_split(train=False), "test")
            self.test_set = self.relabelled(Subset(test, self.kept(test).tolist()) if self.only_classes else test)
        if self.in_memory is not False:
            splits = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
            self.memory = memory_splits(splits, self.leaf_tensors)
            if self.in_memory and self.memory.keys() != {name for name, split in splits.items() if split is not None}:
                raise UserInputError(f"data.in_memory: {type(self).__name__}'s data cannot be held in memory")
        if self.image_shape is not None:
            self.augmentation.try_on(self.image_shape)

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

    def split_train(self, full_train: Dataset) -> tuple[Dataset, Dataset]:
        """The seeded train/validation split, then the few-shot subset of the training part."""
        pool = self.kept(full_train)
        train_indices, val_indices = seeded_split(len(pool), self.val_size, self.split_seed, "val_size")
        train_indices, val_indices = pool[train_indices], pool[val_indices]
        labels = self.split_labels(full_train)
        if labels is None and self.samples_per_class is not None:
            raise UserInputError("data.samples_per_class needs class labels; use data.train_fraction")
        subset_labels = labels[train_indices] if labels is not None else torch.zeros(len(train_indices))
        keep = few_shot_indices(subset_labels, self.samples_per_class, self.train_fraction, self.split_seed)
        if keep is not None:
            train_indices = train_indices[keep]
        train = self.relabelled(Subset(full_train, train_indices.tolist()))
        return train, self.relabelled(Subset(full_train, val_indices.tolist()))

    def kept(self, dataset: Dataset) -> Tensor:
        """Indices of the examples of ``dataset`` that this data keeps: all, or those of ``only_classes``."""
        if not self.only_classes:
            return torch.arange(len(dataset))
        return torch.isin(self.split_labels(dataset), torch.tensor(self.only_classes)).nonzero().flatten()

    def relabelled(self, dataset: Dataset) -> Dataset:
        rule = self.label_rule()
        return RelabelledTargets(dataset, rule) if rule is not None else dataset

    def loader(self, dataset: Dataset | None, batch_size: int, sampler: ResumableSampler | None = None) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() with the matching stage before asking for a dataloader")
        loader_class = ResumableDataLoader if sampler is not None else DataLoader
        workers = self.loader_workers(dataset)
        return loader_class(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=self.collation(dataset),
            pin_memory=self.device().type == "cuda",
            generator=torch.Generator(),  # worker seeds drawn from here, not from the global generator
        )

    def loader_workers(self, dataset: Dataset) -> int:
        """DataLoader workers for ``dataset``: ``data.num_workers`` when given; otherwise, when :meth:`reads_slowly`,
        the cores this process may use shared among this machine's training processes, else none."""
        if self.num_workers is not None:
            return self.num_workers
        if not self.reads_slowly(dataset):
            return 0
        return max(1, available_cores() // (self.trainer.num_devices if self.trainer else 1))

    def collation(self, dataset: Dataset) -> Callable[[Any], Any] | None:
        """How a DataLoader makes batches of ``dataset``'s examples: ``None``, torch's default collation of what
        ``__getitem__`` gives; a subclass whose datasets read whole batches (``__getitems__``, as
        :class:`~project.data.file_images.FileImages`) gives the function that takes such a batch as it is."""
        return None

    def device(self) -> torch.device:
        """Where batches are trained on: the Trainer's device, or the CPU without a Trainer."""
        return self.trainer.strategy.root_device if self.trainer else torch.device("cpu")

    def batches(
        self, split: str, dataset: Dataset | None, batch_size: int, sampler: ResumableSampler | None = None
    ) -> DataLoader | DeviceBatches:
        """The split's batches: drawn on the training device when it is held in memory, else a DataLoader."""
        if split in self.memory:
            return DeviceBatches(self.memory[split], batch_size, *self.normalisation(), self.device(), sampler)
        return self.loader(dataset, batch_size, sampler)

    def normalised_batches(self, split: str) -> Iterator[tuple[Tensor, Any]]:
        """The ``split``'s batches (``train``, ``val`` or ``test``) in order, unaugmented, normalised as the network
        takes them: for code that reads them without a Trainer (``python -m project evaluate``, the notebooks)."""
        dataset = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        for batch in self.batches(split, dataset, self.eval_batch_size):
            yield self.on_after_batch_transfer(batch, 0)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        trainer = self.trainer
        resume = next((c for c in trainer.callbacks if isinstance(c, TrainingPosition)), None) if trainer else None
        sampler = ResumableSampler(
            self.train_set,
            seed=self.shuffle_seed,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            position=(lambda: resume.position(trainer, self.batch_size)) if resume else None,
        )
        return self.batches("train", self.train_set, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self.batches("val", self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self.batches("test", self.test_set, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader | DeviceBatches:
        return self.batches("test", self.test_set, self.eval_batch_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise a batch of uint8 pixels (a DataLoader's over image files, which carries a quarter of the bytes of
        floats), in every stage; then augment a training batch, on its device, whichever path it came by (both hand
        over normalised batches). Called at each training step, not when the loop fetches a batch ahead, so the
        augmentation generator's state in a checkpoint is that of the step it was written at. Code that reads a
        loader without a Trainer (``python -m project evaluate``) calls it too."""
        if not isinstance(batch, list | tuple) or len(batch) != 2 or not isinstance(batch[0], Tensor):
            return batch  # not a batch of images: e.g. the example input TensorBoard traces the graph with
        images, targets = batch
        if images.dtype == torch.uint8:
            images = normalised(images, *self.normalisation_on(images.device))
        augments = self.augment_shift or self.augmentation.active
        if not augments or self.trainer is None or not self.trainer.training:
            return images, targets
        if self.augment_shift:  # first, and with the same draws as before data.augment existed (resumes alike)
            images = random_shift(images, self.augment_shift, self.augment_generator)
        if self.augmentation.active:
            mean, std = self.normalisation_on(images.device)
            seed = batch_seed(self.augment_generator, self.trainer.global_rank)
            unit, targets = self.augmentation(images * std + mean, targets, seed)
            images = normalised(unit, mean, std)
        return images, targets

    def normalisation_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """:meth:`normalisation`'s mean and std as ``(1, C, 1, 1)`` tensors on ``device``, for whole batches."""
        mean, std = self.normalisation()
        return tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (mean, std))

    def state_dict(self) -> dict[str, Any]:
        return {"augment_generator": self.augment_generator.get_state(), "shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.augment_generator.set_state(state_dict["augment_generator"])

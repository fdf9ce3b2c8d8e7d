"""What every data module shares: the data directory and the batch size, and the pieces it is given: how its examples
are split and sampled (:class:`~project.data.splits.Split`), how labels become targets
(:class:`~project.data.labels.Labels`), how training batches are augmented
(:class:`~project.data.augment.Augmentation`) and how batches are loaded (:class:`~project.data.loading.Loading`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from project.data.augment import Augmentation, BatchAugmentation
from project.data.cores import available_cores
from project.data.in_memory import DeviceBatches, SplitTensors, TensorImages, memory_splits, normalised, unit_scaled
from project.data.labels import Labels, RelabelledTargets
from project.data.loading import FloatBatches, Loading, data_loader
from project.data.recording import piece, record_arguments, record_piece
from project.data.sampler import Position, ResumableSampler, recorded_position, resumed_position
from project.data.splits import Split, few_shot_indices, fold_split, seeded_split
from project.errors import UserInputError
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
    """What every dataset here shares: the split, few-shot subsets, label rules, augmentation and the loaders.

    A subclass provides :meth:`prepare_data` (make the files available), :meth:`load_split` (the training or test
    split as a dataset of ``(pixels, target)``), :meth:`split_labels` (class labels for stratification) and
    :attr:`num_classes`. Everything else the project reads of a data module is declared below with its default, so
    nothing is probed for: :attr:`image_shape`, :meth:`normalisation`, :attr:`awaiting_normalisation` and
    :meth:`adopt_normalisation`, :meth:`leaf_tensors` (the in-memory path), :meth:`preprocessing`, :attr:`task`,
    :attr:`class_names`, :attr:`num_outputs`, :attr:`batch_size`, :attr:`shuffle_seed`.

    Every path hands the module batches of pixels (uint8, or floats on the 0..1 scale), which it augments (training
    batches) and normalises once, on the training device (:meth:`on_after_batch_transfer`). Where the training order
    stands is the module's own state (:meth:`state_dict`, which checkpoints hold), handed to its sampler on resume.

    The constructor records its arguments and those of every subclass constructor that calls it as hyper-parameters
    (:mod:`project.data.recording`): checkpoints keep them, a resumed run is checked against them and ``evaluate``
    rebuilds the module from them. Values a subclass passes its parent are not recorded (its class sets them);
    Python objects are named in :attr:`unrecorded_arguments`, those a config gives by class path in
    :attr:`class_arguments`.

    Args:
        data_dir: the data directory; default ``$PROJECT_DATA_DIR``, else ``./data``.
        batch_size: training batch size.
        split: how the examples are split and sampled (:class:`~project.data.splits.Split`: ``val_size``,
            ``test_size``, ``split_seed``, ``samples_per_class``, ``train_fraction``, ``shuffle_seed``, ``folds``,
            ``fold``).
        labels: how class labels are named and become targets (:class:`~project.data.labels.Labels`:
            ``class_names``, ``positive_classes``, ``label_sets``, ``only_classes``).
        augment: how training batches are augmented (:class:`~project.data.augment.Augmentation`: ``transforms``,
            ``shift``, ``mixup_alpha``, ``cutmix_alpha``).
        loading: how batches are loaded (:class:`~project.data.loading.Loading`: ``in_memory``, ``num_workers``,
            ``eval_batch_size``).

    Each piece may be given as the mapping of its fields (``split={"val_size": 100}``), as a checkpoint records it; the
    module keeps them as :attr:`split`, :attr:`labels`, :attr:`loading` and :attr:`augmentation` (the one at work).
    """

    default_task = "multiclass"

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        split: Split = Split(),
        labels: Labels = Labels(),
        augment: Augmentation = Augmentation(),
        loading: Loading = Loading(),
    ) -> None:
        super().__init__()
        record_arguments(self)
        if batch_size < 1:
            raise UserInputError(f"data.batch_size must be a positive integer, got {batch_size}")
        self.split = piece(Split, split, "data.split")
        self.labels = piece(Labels, labels, "data.labels")
        self.loading = piece(Loading, loading, "data.loading")
        self.float_batches = FloatBatches()  # what CPU batches are converted into (network_batch)
        augment = piece(Augmentation, augment, "data.augment")
        resolved = {"split": self.split, "labels": self.labels, "augment": augment, "loading": self.loading}
        for name, value in resolved.items():
            record_piece(self, name, value)  # all its options, as resolved
        self.labels.check_task(type(self).__name__, self.default_task)
        self.data_dir = resolve_data_dir(data_dir)
        self.batch_size = batch_size
        seed = self.split.shuffle_seed
        self.shuffle_seed = seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.augmentation = BatchAugmentation(augment, self.shuffle_seed)
        self.memory: dict[str, SplitTensors] = {}
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.resumed_at: Position | None = None

    # -- what a subclass provides ------------------------------------------------------------------------------
    num_classes: int = 0
    """Number of classes (or of yes/no labels); known once the module is built, since it sizes the network."""
    named_classes: list[str] | None = None
    """The classes' own names in label order (a folder's class folders, torchvision's); ``None``: numbered (unless
    ``data.labels.class_names`` names them)."""

    @property
    def dataset_name(self) -> str:
        """The data's name as people know it, for titles (an evaluation report's): ``"Fashion-MNIST"``, the images
        of a folder by the folder's name; by default the class's name less ``DataModule`` (``"Tensor"``)."""
        return type(self).__name__.removesuffix("DataModule") or type(self).__name__

    vocab_size: int = 0
    """How many token ids the data's tokenizer makes (text data: batches of ids, padded with 0); 0: images."""
    max_length: int = 0
    """The most token ids of one example of text data (``data.max_length``); 0: images."""
    tokenizer: Any = None
    """Text data's ``project.data.tokenizer.TextTokenizer``, which reports decode its batches with; ``None``: images."""
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
        """The training (``train=True``) or test split, yielding ``(pixels, target)``: uint8 pixels, or floats on the
        0..1 scale, which the module normalises (a subclass whose datasets normalise their own images says so:
        :attr:`arrives_normalised`)."""
        raise NotImplementedError

    def split_labels(self, dataset: Dataset) -> Tensor | None:
        """Class labels of ``dataset`` (as returned by :meth:`load_split`, or a subset of it), or ``None``."""
        raise NotImplementedError

    def files_ready(self) -> bool:
        """Whether :meth:`setup` can read the data now (no download pending)."""
        return True

    def normalisation(self) -> tuple[list[float], list[float]]:
        """Mean and standard deviation per channel, which batches are normalised with."""
        raise NotImplementedError

    @property
    def arrives_normalised(self) -> bool:
        """Whether the batches reach :meth:`on_after_batch_transfer` normalised already, by datasets that normalise
        their own images (a user's ``Dataset``: :class:`~project.data.DatasetDataModule`): they are then taken as they
        are, and brought back to the 0..1 scale only to be augmented. The base's datasets hand over pixels."""
        return False

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
        """The name of the task the targets call for (``multiclass``, ``binary``, ``multilabel``, ``regression``)."""
        return self.labels.task(self.default_task)

    @property
    def class_names(self) -> list[str]:
        """Names of the classes (or labels) the task is about."""
        return self.labels.names(self.named_classes, self.num_classes)

    @property
    def num_outputs(self) -> int:
        """Size of the network's output layer for this data: one per class or label, or one value."""
        return TASKS[self.task].outputs_for(self.labels.count(self.num_classes))

    # -- Lightning hooks ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load and check the splits the stage needs; fitting loads the test split too, so that a broken test split
        stops the run before it trains rather than after."""
        self.labels.check_classes(self.num_classes)
        self.augmentation.mix_with(self.task, self.num_outputs)
        if stage in (None, "fit", "validate") and self.train_set is None:
            self.train_set, self.val_set = self.split_train(self.checked(self.load_split(train=True), "training"))
        if self.test_set is None:
            test = self.checked(self.load_split(train=False), "test")
            kept = Subset(test, self.kept(test).tolist()) if self.labels.only_classes else test
            self.test_set = self.relabelled(kept)
        in_memory = self.loading.in_memory
        if in_memory is not False:
            splits = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
            self.memory = memory_splits(splits, self.leaf_tensors)
            if in_memory and self.memory.keys() != {name for name, split in splits.items() if split is not None}:
                raise UserInputError(f"data.loading.in_memory: {type(self).__name__}'s data cannot be held in memory")
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
        """The seeded train/validation split (or fold ``split.fold`` of ``split.folds`` as the validation set), then
        the few-shot subset of the training part."""
        split = self.split
        pool = self.kept(full_train)
        labels = self.split_labels(full_train)
        if split.folds is not None:
            classes = labels[pool] if labels is not None and labels.ndim == 1 else None
            classes = None if classes is None or classes.is_floating_point() else classes  # regression: plain folds
            train_indices, val_indices = fold_split(classes, len(pool), split.folds, split.fold, split.split_seed)
        else:
            train_indices, val_indices = seeded_split(len(pool), split.val_size, split.split_seed, "split.val_size")
        train_indices, val_indices = pool[train_indices], pool[val_indices]
        if labels is None and split.samples_per_class is not None:
            raise UserInputError("data.split.samples_per_class needs class labels; use data.split.train_fraction")
        subset_labels = labels[train_indices] if labels is not None else torch.zeros(len(train_indices))
        keep = few_shot_indices(subset_labels, split.samples_per_class, split.train_fraction, split.split_seed)
        if keep is not None:
            train_indices = train_indices[keep]
        train = self.relabelled(Subset(full_train, train_indices.tolist()))
        return train, self.relabelled(Subset(full_train, val_indices.tolist()))

    def kept(self, dataset: Dataset) -> Tensor:
        """Indices of the examples of ``dataset`` that this data keeps: all, or those of ``only_classes``."""
        if not self.labels.only_classes:
            return torch.arange(len(dataset))
        return torch.isin(self.split_labels(dataset), torch.tensor(self.labels.only_classes)).nonzero().flatten()

    def relabelled(self, dataset: Dataset) -> Dataset:
        rule = self.labels.rule()
        return RelabelledTargets(dataset, rule) if rule is not None else dataset

    def loader(self, dataset: Dataset | None, batch_size: int, sampler: ResumableSampler | None = None) -> DataLoader:
        """The DataLoader path's loader over ``dataset``, with :meth:`loader_workers` and :meth:`collation`, its
        batches pinned for a GPU."""
        if dataset is None:
            raise RuntimeError("call setup() with the matching stage before asking for a dataloader")
        pinned = self.device().type == "cuda"
        leave_cores = self.loading.leave_cores_to_workers
        workers = self.loader_workers(dataset)
        return data_loader(dataset, batch_size, sampler, workers, self.collation(dataset), pinned, leave_cores)

    def loader_workers(self, dataset: Dataset) -> int:
        """DataLoader workers for ``dataset``: ``data.loading.num_workers`` when given; otherwise, when
        :meth:`reads_slowly`, the cores this process may use shared among this machine's training processes; else 0."""
        if self.loading.num_workers is not None:
            return self.loading.num_workers
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
            return DeviceBatches(self.memory[split], batch_size, self.device(), sampler)
        return self.loader(dataset, batch_size, sampler)

    def normalised_batches(self, split: str) -> Iterator[tuple[Tensor, Any]]:
        """The ``split``'s batches (``train``, ``val`` or ``test``) in order, unaugmented, normalised as the network
        takes them: for code that reads them without a Trainer (``python -m project evaluate``, the notebooks)."""
        dataset = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        for batch in self.batches(split, dataset, self.loading.eval_batch_size):
            yield self.network_batch(batch, augment=False)

    def training_position(self) -> Position:
        """Where the training order stands when an epoch's batches are drawn (what the sampler asks): the loop's epoch
        from its start, or, until the first batch of a resumed run is trained, where the checkpoint left it, however
        often and early it is asked (a DataLoader with workers draws its first indices when Lightning sets the loop
        up, before the loop's epoch counter is restored)."""
        if self.resumed_at is not None:
            return self.resumed_at
        return Position(self.trainer.current_epoch if self.trainer else 0)

    def training_sampler(self) -> ResumableSampler:
        """The training order: seeded, resumable, this process's share of it (a subclass whose data is read in pieces
        may give one that follows them)."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return ResumableSampler(self.train_set, self.shuffle_seed, world, rank, position=self.training_position)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self.batches("train", self.train_set, self.batch_size, self.training_sampler())

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self.batches("val", self.val_set, self.loading.eval_batch_size)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self.batches("test", self.test_set, self.loading.eval_batch_size)

    def predict_dataloader(self) -> DataLoader | DeviceBatches:
        return self.batches("test", self.test_set, self.loading.eval_batch_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A batch on its device as the network takes it (:meth:`network_batch`), augmented in training. Called at
        each step, not when the loop fetches a batch ahead, so the augmentation generator's state in a checkpoint is
        that of the step it was written at; the first training batch also marks the resumed position as taken (its
        indices were drawn)."""
        training = self.trainer is not None and self.trainer.training
        if training and _image_batch(batch):
            self.resumed_at = None  # from here on, the loop's own epoch counts
        return self.network_batch(batch, augment=training)

    def network_batch(self, batch: Any, augment: bool) -> Any:
        """A batch of pixels augmented (``augment``: on the 0..1 scale the transforms take) and then normalised, once,
        on its device: the one way of every path (in memory, from the cache, a DataLoader). Batches that arrive
        normalised (:attr:`arrives_normalised`) are taken as they are, unless augmented."""
        if not _image_batch(batch):
            return batch  # e.g. the example input that the model summary and TensorBoard's graph run through
        images, targets = batch
        augment = augment and self.augmentation.active
        if self.arrives_normalised and not augment:
            return images, targets
        mean, std = self.normalisation_on(images.device)
        if self.arrives_normalised:
            units = images * std + mean
        else:  # uint8 of a CPU batch: into reused memory where it is large (fresh memory costs more than converting)
            units = self.float_batches.unit_scaled(images) if images.dtype == torch.uint8 else images
        if augment:
            units, targets = self.augmentation(unit_scaled(units, copy=False), targets, self.trainer.global_rank)
        return normalised(units, mean, std, copy=False), targets

    def normalisation_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """:meth:`normalisation`'s mean and std as ``(1, C, 1, 1)`` tensors on ``device``, for whole batches."""
        mean, std = self.normalisation()
        return tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (mean, std))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data: the augmentation generator's state, the shuffle seed, and where the
        training order stands (read from the trainer when Lightning saves the checkpoint)."""
        return {
            "augment_generator": self.augmentation.generator.get_state(),
            "shuffle_seed": self.shuffle_seed,
            "position": recorded_position(self.trainer),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take a checkpoint's state: the augmentation generator continues, and the sampler starts where the run
        stopped (:meth:`training_position`)."""
        self.augmentation.generator.set_state(state_dict["augment_generator"])
        self.resumed_at = resumed_position(state_dict.get("position"), self.batch_size)


def _image_batch(batch: Any) -> bool:
    """Whether ``batch`` is ``(images, targets)``, as the loaders give, rather than an example input of the model."""
    return isinstance(batch, list | tuple) and len(batch) == 2 and isinstance(batch[0], Tensor)

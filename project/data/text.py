"""Labelled texts (:class:`TextDataModule`): a CSV or JSON Lines file of texts and labels, or a folder of ``.txt``
files per class, tokenised once and handed on as batches of token ids padded to the longest text of the batch.

What the image side has, text has: the seeded validation and test splits, few-shot subsets, label rules, the
resumable training order and the in-memory path (:class:`~project.data.ImageDataModule`). A batch is ``(ids,
targets)``: ``ids`` a LongTensor ``(batch, length)``, padded with ``[PAD]`` (id 0) to its longest sequence, never
beyond ``max_length``; a network masks the padding as ``ids != 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Subset, default_collate

from project.data.base import ImageDataModule
from project.data.cache import digest, resolve_cache_dir
from project.data.in_memory import SplitTensors, TensorImages
from project.data.labels import RelabelledTargets, check_class_count
from project.data.sampler import ResumableSampler
from project.data.splits import subset_labels
from project.data.text_sources import class_indices, located, read_labelled, text_tokenizer
from project.data.tokenizer import PAD_ID
from project.errors import UserInputError
from project.tasks.masked_tokens import IGNORED


def padded_batch(examples: list[tuple[Tensor, Any]]) -> tuple[Tensor, Any]:
    """A DataLoader's batch of ``(ids, target)`` examples: the ids padded with ``[PAD]`` (0) to the longest of the
    batch (dynamic padding), the targets as torch collates them (a target that is a sequence of ids: padded with
    -100, which the loss ignores)."""
    ids = pad_sequence([example[0] for example in examples], batch_first=True, padding_value=PAD_ID)
    targets = [example[1] for example in examples]
    if isinstance(targets[0], Tensor) and targets[0].ndim == 1 and targets[0].dtype == torch.long:
        return ids, pad_sequence(targets, batch_first=True, padding_value=IGNORED)
    return ids, default_collate(targets)


def _trimmed(ids: Tensor) -> Tensor:
    """A batch of ids cut to its longest sequence (padding comes last): batches drawn in memory, padded to the
    longest of their split, come out as a DataLoader's."""
    longest = int((ids != PAD_ID).sum(dim=1).max()) if ids.numel() else 0
    return ids[:, :longest] if longest < ids.shape[1] else ids


def refuse_augmentation(module: ImageDataModule) -> None:
    """Text batches are token ids: the image augmentations (``data.augment``) do not apply to them."""
    if module.augmentation.active:
        raise UserInputError(
            f"data.augment: {type(module).__name__}'s batches are token ids, which the image augmentations (shift, "
            f"transforms, MixUp, CutMix) do not apply to; leave data.augment out"
        )


class _TokenisedTexts(TensorImages):
    """Texts as token ids (one LongTensor each, ``[CLS] ... [SEP]``) and their class indices; held whole as a tensor
    of ids padded to the longest text (the in-memory path), or read one text at a time (a DataLoader)."""

    def __init__(self, ids: list[Tensor], targets: Tensor) -> None:
        self.ids, self.targets = ids, targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.ids[index], int(self.targets[index])

    def tensors(self) -> SplitTensors:
        return SplitTensors(pad_sequence(self.ids, batch_first=True, padding_value=PAD_ID), self.targets)


def _text_lengths(dataset: Dataset) -> Tensor:
    """The number of tokens of each example of ``dataset`` (a :class:`_TokenisedTexts`, or subsets and relabellings of
    one)."""
    if isinstance(dataset, Subset):
        return _text_lengths(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, RelabelledTargets):
        return _text_lengths(dataset.dataset)
    return torch.tensor([len(ids) for ids in dataset.ids])


class _BucketedSampler(ResumableSampler):
    """The resumable training order with texts of similar length batched together, so that batches hold less padding:
    each run of ``window`` batches of the shuffled order is sorted by length and cut into batches, which are then
    shuffled among themselves (seeded by the epoch: the same order every time, so a run resumes exactly). A last
    batch short of ``batch_size`` stays last."""

    def __init__(self, dataset: Dataset, batch_size: int, window: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.lengths = _text_lengths(dataset).tolist()
        self.batch_size, self.window = batch_size, window

    def ordered(self, indices: list[int]) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        size, span, full, tail = self.batch_size, self.window * self.batch_size, [], []
        for start in range(0, len(indices), span):
            by_length = sorted(indices[start : start + span], key=self.lengths.__getitem__)
            batches = [by_length[i : i + size] for i in range(0, len(by_length), size)]
            if len(batches[-1]) < size:
                tail = batches.pop()
            full += [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]
        return [index for batch in [*full, tail] for index in batch]


class TextDataModule(ImageDataModule):
    """Classify texts: ``train`` is a CSV (or TSV) file with a header line, a JSON Lines file (one object a line), or
    a folder with one sub-folder of ``.txt`` files per class (one text a file, the folder's name its class); ``test``
    the same, else ``data.split.test_size`` texts of ``train`` are held out (seeded with ``split_seed + 1``).

    Labels are class names (the classes are the names sorted; reports and predictions use them) or integers 0, 1, ...
    (as many classes as the largest plus one). Every text is tokenised once, at setup: ``[CLS] ... [SEP]``, cut to
    ``max_length`` tokens.

    Args:
        train, test: the labelled texts (relative names are read from ``data_dir`` when it is given, else the
            current folder).
        text_column, label_column: the columns (or JSON keys) that hold the text and the label.
        tokenizer: a ``tokenizer.json``, a Hugging Face model folder (its ``tokenizer.json`` or ``vocab.txt``), or a
            checkpoint of a text run (the tokenizer it was trained with: what a fine-tune of a pretrained encoder
            needs); default: a WordPiece of ``vocab_size`` tokens trained on the training texts (the held-out test
            texts left out), kept in the cache folder (``$PROJECT_CACHE_DIR``, else ``./cache``) for later runs and
            recorded in every checkpoint.
        vocab_size: the size of a tokenizer trained here (at most; fewer when the texts hold fewer).
        max_length: the most tokens of a text, ``[CLS]`` and ``[SEP]`` included (the rest is cut).
        bucket_window: batch texts of similar length together within each run of this many batches of the training
            order (:class:`_BucketedSampler`: less padding; measured in docs/text.md);
            0: off, each batch a random draw.
        **kwargs: see :class:`~project.data.ImageDataModule` (batch_size, split, labels, loading; no augment).
    """

    def __init__(
        self,
        train: str,
        test: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        tokenizer: str | None = None,
        vocab_size: int = 8192,
        max_length: int = 128,
        bucket_window: int = 0,
        data_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        refuse_augmentation(self)
        if bucket_window < 0:
            raise UserInputError(f"data.bucket_window must be 0 (off) or a number of batches, got {bucket_window}")
        self.bucket_window = bucket_window
        if max_length < 3:
            raise UserInputError(f"data.max_length must be at least 3 ([CLS], a token, [SEP]), got {max_length}")
        self.data_dir = Path(data_dir).expanduser() if data_dir else Path()  # where relative names are read from
        self.train_source = located(train, self.data_dir, "train")
        self.test_source = located(test, self.data_dir, "test") if test else None
        texts, labels = read_labelled(self.train_source, text_column, label_column, "train")
        test_texts, test_labels = (
            read_labelled(self.test_source, text_column, label_column, "test") if self.test_source else (None, None)
        )
        self.classes, train_indices, test_indices = class_indices(labels, test_labels, str(self.test_source))
        self.texts = {"train": texts, "test": test_texts}
        self.targets = {"train": train_indices, "test": test_indices}
        self.num_classes = len(self.classes) if self.classes else max(train_indices + (test_indices or [])) + 1
        if self.num_classes < 2:
            raise UserInputError(f"data.train: {self.train_source} holds one class: a task needs two or more")
        check_class_count(self.num_classes)
        self.held_out = None if test_texts is not None else self.split.test_split(len(texts))
        tokenised = texts if self.held_out is None else [texts[i] for i in self.held_out[0].tolist()]
        key = digest(*tokenised)
        self.tokenizer = text_tokenizer(tokenizer, vocab_size, lambda: tokenised, key, resolve_cache_dir(None))
        self.vocab_size = self.tokenizer.vocab_size
        self.max_length = max_length
        self.encoded: dict[str, _TokenisedTexts] = {}

    @property
    def named_classes(self) -> list[str] | None:
        return self.classes

    @property
    def dataset_name(self) -> str:
        return f"the texts of {self.train_source.name}"

    def prepare_data(self) -> None:
        """Nothing to fetch: the texts were read and checked when the module was built."""

    def tokenised(self, split: str) -> _TokenisedTexts:
        """The ``split``'s texts (``train``: the whole file, held-out test texts included), tokenised once."""
        if split not in self.encoded:
            ids = self.tokenizer.encode(self.texts[split], self.max_length)
            targets = torch.tensor(self.targets[split], dtype=torch.long)
            self.encoded[split] = _TokenisedTexts([torch.tensor(sequence) for sequence in ids], targets)
        return self.encoded[split]

    def load_split(self, train: bool) -> Dataset:
        if self.held_out is None:
            return self.tokenised("train" if train else "test")
        kept, held = self.held_out
        return Subset(self.tokenised("train"), (kept if train else held).tolist())

    def split_labels(self, dataset: Dataset) -> Tensor:
        base = dataset
        while isinstance(base, Subset):
            base = base.dataset
        return subset_labels(dataset, base.targets)

    def collation(self, dataset: Dataset) -> Any:
        return padded_batch

    def training_sampler(self) -> ResumableSampler:
        """The resumable training order; with ``bucket_window``, texts of similar length batched together."""
        if not self.bucket_window:
            return super().training_sampler()
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        position = self.training_position
        arguments = (self.train_set, self.batch_size, self.bucket_window, self.shuffle_seed, world, rank)
        return _BucketedSampler(*arguments, position=position)

    def network_batch(self, batch: Any, augment: bool) -> Any:
        """A batch of token ids as the network takes it: as it is, cut to its longest sequence (no normalisation,
        no augmentation)."""
        if not (isinstance(batch, list | tuple) and len(batch) == 2 and isinstance(batch[0], Tensor)):
            return batch  # the example input of the model summary and TensorBoard's graph
        ids, targets = batch
        return _trimmed(ids), targets

    def preprocessing(self) -> dict[str, Any]:
        """The tokenizer (its JSON document: the key ``tokenizer`` marks a text model everywhere after training),
        the most tokens of a text and the class names."""
        return {"tokenizer": self.tokenizer.to_json(), "max_length": self.max_length, "class_names": self.class_names}

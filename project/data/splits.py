"""Seeded splits and subsets, written once: the train/validation and train/test splits, K folds of the training
pool (cross-validation), stratified few-shot subsets, and the labels of a subset."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from project.errors import UserInputError


def seeded_split(count: int, held_out: int | float, seed: int, option: str) -> tuple[Tensor, Tensor]:
    """Sorted positions ``(kept, held out)`` of a seeded split of ``range(count)``; ``held_out`` is a count or a
    fraction below 1, named ``option`` in the error when it leaves one side empty."""
    held = held_out if isinstance(held_out, int) else max(1, round(held_out * count))
    if not 0 < held < count:
        raise UserInputError(
            f"data.{option}={held_out} leaves no images on one side: the split has {count} images, so {option} must "
            f"hold out between 1 and {count - 1} of them"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[held:].sort().values, order[:held].sort().values


def fold_split(labels: Tensor | None, count: int, folds: int, fold: int, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted positions ``(train, validation)`` of ``range(count)`` for fold ``fold`` of ``folds``: the validation
    set is that fold, the training set the other folds.

    With class ``labels`` (one integer a position), the folds are stratified: each class's positions, shuffled with
    ``seed``, are dealt in turn to the folds, the classes one after the other, so a class's count differs by at most
    one between folds and so do the folds' sizes. Without (regression, multilabel), the shuffled positions are dealt
    in turn. The same ``seed`` and data make the same folds.
    """
    if folds > count:
        raise UserInputError(f"data.split.folds={folds}, but the training pool has only {count} images")
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        dealt = torch.randperm(count, generator=generator)
    else:
        dealt = torch.cat(
            [
                members[torch.randperm(len(members), generator=generator)]
                for members in ((labels == label).nonzero().flatten() for label in labels.unique(sorted=True))
            ]
        )
    in_fold = torch.empty(count, dtype=torch.long)
    in_fold[dealt] = torch.arange(count) % folds
    return (in_fold != fold).nonzero().flatten(), (in_fold == fold).nonzero().flatten()


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
        if samples_per_class is not None and samples_per_class > len(members):
            raise UserInputError(
                f"data.split.samples_per_class={samples_per_class}, but class {label} has only {len(members)} "
                f"training images; use at most {len(members)} or train_fraction"
            )
        count = samples_per_class if samples_per_class is not None else max(1, round(train_fraction * len(members)))
        chosen.append(members[:count])
    return torch.cat(chosen).sort().values


def subset_labels(dataset: Dataset, labels_of_base: Tensor) -> Tensor:
    """The labels of ``dataset`` (the base dataset or a ``Subset`` of it, nested) from the base dataset's labels."""
    if isinstance(dataset, Subset):
        return subset_labels(dataset.dataset, labels_of_base)[torch.as_tensor(dataset.indices)]
    return labels_of_base


@dataclass(frozen=True)
class Split:
    """How a data module's examples are split and sampled: ``--data.split.val_size 5000`` (a piece of every data
    module's arguments, checked when it is built).

    Args:
        val_size: images held out of the training split for validation: a count, or a fraction below 1; not used
            with ``folds`` (the validation set is the fold; a preset's value is left alone, and ``crossval``
            refuses one on its command line).
        test_size: for data without a test split of its own (a folder without ``test/``, a CSV without
            ``test.csv``, arrays or a dataset without test ones), the images held out of it for testing (seeded with
            ``split_seed + 1``): a count, or a fraction below 1; data with a test split ignores it.
        split_seed: seed of the train/validation (and train/test) split and of the few-shot subset.
        samples_per_class: keep only this many training images per class (stratified, seeded).
        train_fraction: keep only this fraction of the training images of each class (stratified, seeded).
        shuffle_seed: seed of the training order and of the augmentation; default: the run's ``seed_everything``.
        folds: cross-validation: divide the training pool (the training split before the validation split) into
            this many folds, seeded with ``split_seed``, stratified by class where the data has class labels
            (:func:`fold_split`); fold ``fold`` is the validation set, the others are trained on (the few-shot
            subset, if any, is taken from them). The test split is unchanged. ``python -m project crossval`` trains
            every fold (docs/crossval.md).
        fold: which of the ``folds`` is the validation set, from 0 to ``folds - 1``.
    """

    val_size: int | float = 0.1
    test_size: int | float = 0.2
    split_seed: int = 42
    samples_per_class: int | None = None
    train_fraction: float | None = None
    shuffle_seed: int | None = None
    folds: int | None = None
    fold: int | None = None

    def __post_init__(self) -> None:
        for name in ("val_size", "test_size"):
            size = getattr(self, name)
            if not (size >= 1 if isinstance(size, int) else isinstance(size, float) and 0 < size < 1):
                raise UserInputError(
                    f"data.split.{name} must be a count of 1 or more, or a fraction in (0, 1), got {size!r}"
                )
        if self.samples_per_class is not None and self.train_fraction is not None:
            raise UserInputError("data.split.samples_per_class and train_fraction exclude each other: set one")
        if self.samples_per_class is not None and self.samples_per_class < 1:
            raise UserInputError(
                f"data.split.samples_per_class must be a positive integer, got {self.samples_per_class}"
            )
        if self.train_fraction is not None and not 0 < self.train_fraction <= 1:
            raise UserInputError(f"data.split.train_fraction must lie in (0, 1], got {self.train_fraction}")
        self._check_folds()

    def _check_folds(self) -> None:
        if self.folds is None:
            if self.fold is not None:
                raise UserInputError(f"data.split.fold={self.fold} needs data.split.folds (the number of folds)")
            return
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise UserInputError(f"data.split.folds must be a whole number of 2 or more, got {self.folds!r}")
        if self.fold is None:
            raise UserInputError(
                f"data.split.folds={self.folds} needs data.split.fold, the fold that validates (0 to "
                f"{self.folds - 1}); python -m project crossval trains them all"
            )
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < self.folds:
            raise UserInputError(
                f"data.split.fold must be a whole number from 0 to {self.folds - 1} with data.split.folds="
                f"{self.folds}, got {self.fold!r}"
            )

    def test_split(self, count: int) -> tuple[Tensor, Tensor]:
        """Positions ``(kept, held out for testing)`` of data with ``count`` examples and no test split of its own."""
        return seeded_split(count, self.test_size, self.split_seed + 1, "split.test_size")

"""Seeded splits and subsets, written once: the train/validation and train/test splits, stratified few-shot
subsets, and the labels of a subset."""

from __future__ import annotations

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
                f"data.samples_per_class={samples_per_class}, but class {label} has only {len(members)} "
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


def check_split_options(
    batch_size: int,
    eval_batch_size: int,
    num_workers: int | None,
    val_size: int | float,
    samples_per_class: int | None,
    train_fraction: float | None,
) -> None:
    """Refuse data options that cannot work, naming the value and what is allowed."""
    for name, value in {"batch_size": batch_size, "eval_batch_size": eval_batch_size}.items():
        if value < 1:
            raise UserInputError(f"data.{name} must be a positive integer, got {value}")
    if num_workers is not None and num_workers < 0:
        raise UserInputError(f"data.num_workers must be 0 or more, got {num_workers}")
    if not (val_size >= 1 if isinstance(val_size, int) else 0 < val_size < 1):
        raise UserInputError(f"data.val_size must be a count of 1 or more, or a fraction in (0, 1), got {val_size}")
    if samples_per_class is not None and train_fraction is not None:
        raise UserInputError("data.samples_per_class and data.train_fraction exclude each other: set one")
    if samples_per_class is not None and samples_per_class < 1:
        raise UserInputError(f"data.samples_per_class must be a positive integer, got {samples_per_class}")
    if train_fraction is not None and not 0 < train_fraction <= 1:
        raise UserInputError(f"data.train_fraction must lie in (0, 1], got {train_fraction}")

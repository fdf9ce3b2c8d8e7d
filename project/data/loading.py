"""How a data module's batches are loaded (``data.loading``: :class:`Loading`), and the DataLoader of the path that
reads examples one by one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from project.data.sampler import ResumableDataLoader, ResumableSampler
from project.errors import UserInputError


@dataclass(frozen=True)
class Loading:
    """How batches are loaded: ``--data.loading.in_memory false`` (a piece of every data module's arguments,
    checked when it is built). None of it changes what is trained on, so a resumed run may change ``num_workers``
    and ``eval_batch_size``.

    Args:
        in_memory: hold every split as tensors on the training device and draw batches by index (the fast path;
            ``num_workers`` then does not apply); image files too large to hold are drawn by index from their cache on
            disk instead (:mod:`project.data.cache`); default: whenever the data can be (see
            :mod:`project.data.in_memory`); ``false``: load examples one by one through a DataLoader.
        num_workers: DataLoader worker processes (the DataLoader path only); default: one per core (shared by this
            machine's training processes) where reading an image decodes a file, none otherwise (the main process
            reads tensors faster than workers could hand them over).
        eval_batch_size: batch size for validation, test and predict (no gradients, so it can be larger).
    """

    in_memory: bool | None = None
    num_workers: int | None = None
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.num_workers is not None and self.num_workers < 0:
            raise UserInputError(f"data.loading.num_workers must be 0 or more, got {self.num_workers}")
        if self.eval_batch_size < 1:
            raise UserInputError(f"data.loading.eval_batch_size must be a positive integer, got {self.eval_batch_size}")


def data_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: ResumableSampler | None,
    workers: int,
    collation: Callable[[Any], Any] | None,
    pinned: bool,
) -> DataLoader:
    """A DataLoader over ``dataset`` (resumable when it follows a ``sampler``): ``workers`` processes kept from
    epoch to epoch, batches made by ``collation`` (``None``: torch's default), in pinned memory when ``pinned``, and
    the workers' seeds drawn from a generator of its own, not from the run's."""
    loader_class = ResumableDataLoader if sampler is not None else DataLoader
    return loader_class(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collation,
        pin_memory=pinned,
        generator=torch.Generator(),
    )

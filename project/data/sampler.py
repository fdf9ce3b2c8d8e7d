"""The training order: a seeded shuffle that can start an epoch part-way through (exact resume), on one process or
many, and the loader over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from project.errors import UserInputError

Position = tuple[int, int]
"""(epoch, number of this process's samples of that epoch already trained on)."""


class ResumableSampler(DistributedSampler):
    """A shuffling sampler that can start an epoch part-way through, on one process or many.

    The order of epoch ``e`` is the permutation seeded with ``seed + e`` (split across processes as
    :class:`DistributedSampler` splits it). ``position`` is asked at the start of each iteration for the epoch and
    the number of samples to skip; without it, the epoch comes from :meth:`set_epoch` and nothing is skipped.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        position: Callable[[], Position] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.position = position

    def __iter__(self) -> Iterator[int]:
        skip = 0
        if self.position is not None:
            epoch, skip = self.position()
            self.set_epoch(epoch)
        indices = list(super().__iter__())
        return iter(indices[skip:])


class TrainingPosition:
    """What the sampler asks of the run: where the training loop stands when an epoch's batches are drawn.

    A callback with this base (:class:`project.training.resume.ExactResume`) is asked; without one, every epoch
    starts at its first batch.
    """

    def position(self, trainer: L.Trainer, batch_size: int) -> Position:
        """The epoch, and the samples of it this process already trained on (non-zero only for the epoch a run
        resumed in)."""
        return trainer.current_epoch, 0


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler`. Lightning asks loaders for ``state_dict`` to tell whether they
    can resume mid-epoch; the position itself is :class:`ExactResume`'s, so the state only records the shuffle seed,
    and a resumed run with another seed is refused (its order could not continue the old one)."""

    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_seed": self.sampler.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_same_shuffle_seed(state_dict.get("shuffle_seed"), self.sampler.seed)


def shuffle_seed_difference(stored: int | None, current: int) -> str | None:
    """What differs when a resumed run's shuffle seed is not its checkpoint's (``None``: nothing): its order could not
    continue the old one. The one wording, for the check before a run and for the loaders' own."""
    if stored is None or stored == current:
        return None
    return (
        f"the shuffle seed {current} (the run has {stored}: resume with --seed_everything {stored}, or "
        f"--data.shuffle_seed {stored})"
    )


def check_same_shuffle_seed(stored: int | None, current: int) -> None:
    """Refuse a loader's state from another shuffle seed (a resume that did not go through the command line)."""
    difference = shuffle_seed_difference(stored, current)
    if difference is not None:
        raise UserInputError(f"this cannot change on resume: {difference}")

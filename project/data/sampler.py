"""The training order: a seeded shuffle that can start an epoch part-way through (exact resume), on one process or
many, the loader over it, and where a run stands in it (:class:`Position`), which the data module keeps in its
``state_dict`` (checkpoints hold it) and hands back to its sampler on resume."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from project.errors import UserInputError


@dataclass(frozen=True)
class Position:
    """Where the training order stands: an epoch, and the samples of it this process already trained on."""

    epoch: int
    samples: int = 0


class ResumableSampler(DistributedSampler):
    """A shuffling sampler that can start an epoch part-way through, on one process or many.

    The order of epoch ``e`` is the permutation seeded with ``seed + e`` (split across processes as
    :class:`DistributedSampler` splits it). ``position`` is asked at the start of each iteration for the epoch and
    the samples to skip (the data module's :meth:`~project.data.ImageDataModule.training_position`); without it, the
    epoch comes from :meth:`set_epoch` and nothing is skipped.
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

    def resumed(self) -> int:
        """Where this epoch's order starts: the epoch set from :attr:`position`, and how many of its samples were
        drawn before (0 without a position)."""
        if self.position is None:
            return 0
        now = self.position()
        self.set_epoch(now.epoch)
        return now.samples

    def ordered(self, indices: list[int]) -> list[int]:
        """This process's share of the epoch's order, as it is trained on (a subclass may regroup it: it must do so
        the same way every time for the same epoch, so that a resumed run skips what was trained)."""
        return indices

    def __iter__(self) -> Iterator[int]:
        skip = self.resumed()
        indices = self.ordered(list(super().__iter__()))
        return iter(indices[skip:])


def recorded_position(trainer: L.Trainer | None) -> dict[str, Any] | None:
    """Where the training loop stands as a checkpoint records it, read from the trainer's public loop state when
    Lightning asks the data module for its ``state_dict``: the epoch, the batches of it trained (those of this
    process: every process trains as many) and whether that was all of them; ``None`` without a trainer."""
    if trainer is None:
        return None
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    complete = batches >= trainer.num_training_batches
    return {"epoch": trainer.current_epoch, "batches": batches, "epoch_complete": complete}


def resumed_position(recorded: dict[str, Any] | None, batch_size: int) -> Position | None:
    """Where a run resumed from a checkpoint that recorded ``recorded`` (:func:`recorded_position`) starts: the next
    epoch's first batch once an epoch was complete, else the first batch it had not trained."""
    if recorded is None:
        return None
    if recorded["epoch_complete"]:
        return Position(recorded["epoch"] + 1)
    return Position(recorded["epoch"], recorded["batches"] * batch_size)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler`. Lightning asks loaders for ``state_dict`` to tell whether they
    can resume mid-epoch; the position itself is the data module's, so the state only records the shuffle seed, and a
    resumed run with another seed is refused (its order could not continue the old one)."""

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
        f"--data.split.shuffle_seed {stored})"
    )


def check_same_shuffle_seed(stored: int | None, current: int) -> None:
    """Refuse a loader's state from another shuffle seed (a resume that did not go through the command line)."""
    difference = shuffle_seed_difference(stored, current)
    if difference is not None:
        raise UserInputError(f"this cannot change on resume: {difference}")

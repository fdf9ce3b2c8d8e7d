"""Exact resume: what a checkpoint must hold, beyond Lightning's own, for a resumed run to continue bit for bit.

Lightning's checkpoint holds the weights, the optimizer, the schedulers and the loop counters, but not the random
number generators, and a plain shuffling DataLoader starts a resumed epoch from its first batch again. Two pieces
close those gaps:

- :class:`ResumableSampler` shuffles each epoch with a permutation that depends only on its seed and the epoch, and
  asks the trainer, when an iteration starts, how many batches of that epoch were already trained on; it skips them.
- :class:`RNGState` (a callback) saves the python, numpy, torch CPU and CUDA generator states of every process in
  the checkpoint, and puts them back right before the first training step of the resumed run.

Every other source of randomness in a training step uses a generator of its own whose state is in the checkpoint
(the data module's augmentation generator), so nothing draws from the global generators between the moment a
checkpoint is written and the next training step.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from project.errors import TrainingDivergedError, UserInputError

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


def trainer_position(trainer: L.Trainer, batch_size: int) -> Position:
    """Where the fit loop stands: its epoch, and the samples of it already trained on (non-zero only on resume)."""
    fit_loop = trainer.fit_loop
    epoch = fit_loop.epoch_progress.current.processed
    batches_done = fit_loop.epoch_loop.batch_progress.current.processed if fit_loop.restarting else 0
    return epoch, batches_done * batch_size


def rng_state() -> dict[str, Any]:
    """The generator states of this process, as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gauss": cached_gauss,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants the nested tuples that ``getstate`` gave; a checkpoint may hand back lists."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, list | tuple) else value


class RNGState(L.Callback):
    """Saves every process's random generator states in the checkpoint and restores them on resume.

    Set ``restore=False`` to save but not restore (the negative control of the exact-resume test).
    """

    def __init__(self, restore: bool = True) -> None:
        self.restore = restore
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # Called on every process when a checkpoint is written; rank 0 writes the file, so gather to it.
        trainer = self._trainer
        local = rng_state()
        if trainer is None or trainer.world_size == 1:
            return {"ranks": [local]}
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, local)
        return {"ranks": gathered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._to_restore is None:
            return
        states, self._to_restore = self._to_restore["ranks"], None
        if not self.restore:
            return
        if len(states) != trainer.world_size:
            raise RuntimeError(
                f"the checkpoint holds the random states of {len(states)} processes, this run has {trainer.world_size}"
            )
        set_rng_state(states[trainer.global_rank])

    _trainer: L.Trainer | None = None


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, the newest state: every ``every_n_train_steps`` optimizer steps and at the end of every epoch.

    ``--ckpt_path last`` resumes from it. (ModelCheckpoint's own ``save_last`` refreshes ``last.ckpt`` only when the
    monitored metric improves, and its step and epoch triggers exclude each other.)
    """

    def __init__(self, every_n_train_steps: int = 200, dirpath: str | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
        self._previous_sigusr1: Any = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # The epoch's validation has run by now; skipped when a step trigger already saved this step.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # SLURM warns a job with SIGUSR1 before its time limit (#SBATCH --signal=SIGUSR1@90). Unless Lightning's
        # SLURM auto-requeue already handles it, pass it on as SIGTERM: save at the next step boundary and stop.
        self._previous_sigusr1 = None
        if (
            signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)
            and threading.current_thread() is threading.main_thread()
        ):
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, _forward_as_sigterm)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous_sigusr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning turns SIGTERM into SIGTERMException at a step boundary: a consistent state worth saving.
        # Other exceptions can strike mid-step, so the last regular save stands.
        if isinstance(exception, SIGTERMException) and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Never replace a good last.ckpt with non-finite weights.
        for name, parameter in trainer.lightning_module.named_parameters():
            if not torch.isfinite(parameter).all():
                raise TrainingDivergedError(
                    f"the weights became non-finite ({name}) by step {trainer.global_step}; {filepath} was not "
                    f"overwritten and holds the last finite state. Lower model.lr or add gradient clipping "
                    f"(--trainer.gradient_clip_val)."
                )
        super()._save_checkpoint(trainer, filepath)


def _forward_as_sigterm(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler`. Lightning asks loaders for ``state_dict`` to tell whether they
    can resume mid-epoch; the position itself comes from the trainer, so the state only records the shuffle seed,
    and a resumed run with another seed is refused (its order could not continue the old one)."""

    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_seed": self.sampler.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("shuffle_seed", self.sampler.seed) != self.sampler.seed:
            raise UserInputError(
                f"the checkpoint was trained with shuffle seed {state_dict['shuffle_seed']} and this run has "
                f"{self.sampler.seed}: resume with the same seed_everything (or data.shuffle_seed)"
            )
